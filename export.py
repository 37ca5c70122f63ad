"""Take a model elsewhere: write a trained baseline run as a Hugging Face transformers folder, tokenizer included,
that `AutoModelForCausalLM.from_pretrained(OUT_DIR)` and `AutoTokenizer.from_pretrained(OUT_DIR)` load offline.

    python export.py baseline hf/baseline            # or export("baseline", "hf/baseline") in Python
    pip install -r requirements-export.txt           # the optional extra it needs (transformers, tokenizers, ...)

Data flow step: the end of the path, a run folder (trained/<run>/) -> a folder in another library's format:
config.json, model.safetensors, generation_config.json, tokenizer.json (+ tokenizer_config.json), README.md.

The baseline (fs_periods = 0) is a Llama, so it becomes a `LlamaForCausalLM`, faithfully, not approximately: export
checks that the written model gives the run's logits to 1e-4 and its tokenizer the run's ids before it keeps the
folder. How each difference from transformers' Llama is handled:
- the embedding scale: the run multiplies embeddings by sqrt(dim) (scale_first_resid), Llama does not; the scale is
  folded into the input embeddings, so a tied run is written untied (lm_head keeps the unscaled matrix);
- rotary positions: both rotate the pair (x[i], x[i + hd/2]) by the same angles pos * theta^(-2i/hd) (the
  "rotate half" layout; `modules/mqa.rope` is Llama's `rotate_half` written as a roll), so q and k are copied as
  they are: the row permutation others need is for Meta's interleaved pairs (x[2i], x[2i + 1]), not for this layout;
- attention: Wqkv is the q, k and v projections stacked (q rows first, each head's rows together), split as they are;
  grouped queries share a key head the same way (query head h reads key head h // (Hq / Hkv));
- the gated MLP: `up` holds the gate's rows, then the value's (act(gate) * value), Llama's gate_proj and up_proj;
- norms: pre-norm RMSNorm with a learned scale before attention, before the MLP and at the end, at the run's eps;
  Llama's RMSNorm computes the same in float32. Runs with another norm, a norm bias or second_resid_norm are refused;
- dropout is off: Llama's attention_dropout is 0, and the run's dropout acts only in training;
- the tokenizer: the run's character-level BPE as a `tokenizers` BPE model with the same merges in the same order;
  bpe_v2's GPT-4 pattern as the pre-tokenizer (bpe_v1 has none: merges may cross spaces); characters outside the
  alphabet removed by the normalizer before the split, as `bpe.Tokenizer` drops them; bos first, as `encode` does.
A FutureFormer is refused: its future memory has no counterpart in transformers; it stays in the project's format.

Every bad input (a missing run, a run without weights, a FutureFormer, an OUT_DIR that holds files) is refused before
anything is written; the folder is written under a temporary name beside OUT_DIR and renamed into place at the end.
"""

import argparse
import math
import os
import shutil
import sys
import tempfile

import torch

from config import ModelConfig, TrainConfig, field_help, to_dict
from data import HUB_DATASET
from modules.mlp import hidden_width
from runs import load_configs, load_model, read_log, run_path

CHECK_TEXT = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."
TOLERANCE = 1e-4  # largest difference allowed between the run's logits and the exported model's
ACTS = {"SiLU": "silu", "GeLU": "gelu", "ReLU": "relu"}  # mlp_nonlinearity -> transformers' hidden_act (exact GELU)
MAX_NEW_TOKENS = 100  # what generation_config.json writes at most, as inference.py's --max_len does by default
# TrainConfig fields that train() writes down (machine, started, ...), not settings of the command: config.py says so
RECORDED = tuple(f for _, group in field_help(TrainConfig) for f, _, comment in group if comment.startswith("recorded"))


class ExportError(ValueError):
    """A run or an output folder that cannot be exported: the message is one line that says why and what to do."""


# ---------------------------------------------------------------- checks, before anything is written


def check_out_dir(out_dir: str) -> None:
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir} is a file: give a folder to write the model into")
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ExportError(f"{out_dir} already exists and is not empty: exports are never written over; "
                          "give a new folder (or move the old one away)")


def check_exportable(name: str, mcfg: ModelConfig, path: str) -> None:
    """Refuse what transformers' Llama cannot compute: a FutureFormer, or a baseline with a non-Llama option."""
    if mcfg.fs_periods:
        raise ExportError(f"{name} is a FutureFormer (fs_periods={mcfg.fs_periods}): its future memory has no "
                          "counterpart in transformers, so it stays in the project's format (load it with "
                          "runs.load_model or inference.py); only a baseline (fs_periods=0) exports")
    unlike = [(field, getattr(mcfg, field), want) for field, want in
              (("norm_type", "RMSNorm"), ("norm_affine", True), ("norm_bias", False), ("second_resid_norm", False),
               ("mlp_gated", True)) if getattr(mcfg, field) != want]
    if unlike:
        field, value, want = unlike[0]
        raise ExportError(f"{name} has {field}={value!r}, which transformers' Llama does not compute (it needs "
                          f"{field}={want!r}): this run cannot be exported faithfully")
    if not os.path.isfile(os.path.join(path, "model.pth")):
        raise ExportError(f"{name} has no weights ({os.path.join(path, 'model.pth')} is missing): a research run "
                          "committed with its configs and log only; train it again (its train_config.json holds "
                          "the settings) to export it")


def hf_libraries():
    """(transformers, tokenizers), the optional extra. The real `tokenizers` library, never this repository's
    tokenizers/ folder: that folder has no __init__.py, so an installed library of the name wins the import, but
    without one Python would import the folder as an empty namespace package; both cases are caught here."""
    try:
        import transformers

        import tokenizers
    except ImportError as e:
        raise ExportError(f"exporting needs the optional extra ({e}): pip install -r requirements-export.txt") from None
    if not hasattr(tokenizers, "Tokenizer"):  # a namespace package: a folder without __init__.py, such as ours
        raise ExportError(f"`import tokenizers` found the folder(s) {list(tokenizers.__path__)}, not the Hugging Face "
                          "library: pip install -r requirements-export.txt")
    return transformers, tokenizers


# ---------------------------------------------------------------- the model


def llama_config(mcfg: ModelConfig, tok) -> dict:
    """transformers' LlamaConfig fields of a baseline run."""
    return dict(
        vocab_size=mcfg.vocab_size, hidden_size=mcfg.dim, num_hidden_layers=mcfg.num_layers,
        num_attention_heads=mcfg.num_q_heads, num_key_value_heads=mcfg.num_kv_heads, head_dim=mcfg.head_dim,
        intermediate_size=hidden_width(mcfg.dim, mcfg.mlp_hidden_mult, mcfg.mlp_gated),
        hidden_act=ACTS[mcfg.mlp_nonlinearity], mlp_bias=mcfg.mlp_bias, attention_bias=False, attention_dropout=0.0,
        rms_norm_eps=mcfg.eps, rope_theta=mcfg.theta, max_position_embeddings=mcfg.max_seq_len,
        # the sqrt(dim) scale goes into the input embeddings only, so the output matrix is a different one
        tie_word_embeddings=mcfg.weight_tying and not mcfg.scale_first_resid,
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)


def llama_weights(state: dict, mcfg: ModelConfig) -> dict:
    """The run's state dict under transformers' Llama names (see the module docstring for each convention). Every
    tensor of the run is used exactly once, or this raises: nothing of the model is silently left behind."""
    Hq, Hkv, hd = mcfg.num_q_heads, mcfg.num_kv_heads, mcfg.head_dim
    left = dict(state)
    E = left.pop("embedding.weight")                                              # (V, D)
    out = {"model.embed_tokens.weight": E * math.sqrt(mcfg.dim) if mcfg.scale_first_resid else E,
           "lm_head.weight": E if mcfg.weight_tying else left.pop("output.weight"),
           "model.norm.weight": left.pop("final_norm.weight")}
    for i in range(mcfg.num_layers):
        src, dst = f"body.{i}.", f"model.layers.{i}."
        q, k, v = left.pop(src + "attn.Wqkv.weight").split([Hq * hd, Hkv * hd, Hkv * hd])   # (H.. * hd, D) each
        gate, up = left.pop(src + "mlp.up.weight").chunk(2)                                  # (hidden, D) each
        out |= {dst + "input_layernorm.weight": left.pop(src + "attn_norm.weight"),
                dst + "self_attn.q_proj.weight": q, dst + "self_attn.k_proj.weight": k,
                dst + "self_attn.v_proj.weight": v, dst + "self_attn.o_proj.weight": left.pop(src + "attn.Wo.weight"),
                dst + "post_attention_layernorm.weight": left.pop(src + "mlp_norm.weight"),
                dst + "mlp.gate_proj.weight": gate, dst + "mlp.up_proj.weight": up,
                dst + "mlp.down_proj.weight": left.pop(src + "mlp.down.weight")}
        if mcfg.mlp_bias:
            gate_b, up_b = left.pop(src + "mlp.up.bias").chunk(2)
            out |= {dst + "mlp.gate_proj.bias": gate_b, dst + "mlp.up_proj.bias": up_b,
                    dst + "mlp.down_proj.bias": left.pop(src + "mlp.down.bias")}
    if left:
        raise ExportError(f"the run holds weights that a Llama has no place for: {sorted(left)[:3]}")
    return {k: t.detach().clone().contiguous() for k, t in out.items()}


# ---------------------------------------------------------------- the tokenizer


def hf_tokenizer(tok, max_seq_len: int):
    """The run's tokenizer (`bpe.Tokenizer`) as a transformers fast tokenizer over a `tokenizers` BPE model."""
    transformers, tokenizers = hf_libraries()
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors

    vocab = {tok.expand_token(i): i for i in range(tok.vocab_len)}
    merges = [(tok.expand_token(a), tok.expand_token(b)) for a, b in tok.merges]   # rank order: merge r makes id A + r
    hf = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))  # no unk token: an unknown character vanishes
    # characters outside the alphabet are removed before the text is split, as bpe.Tokenizer drops them first
    # ("a€b" is one piece "ab" there, not "a" and "b"); each allowed character written as \x{hex}, nothing to escape
    hf.normalizer = normalizers.Replace(Regex("[^" + "".join(f"\\x{{{ord(c):x}}}" for c in tok.alphabet) + "]"), "")
    if tok.pattern is not None:  # bpe_v2: merges stay inside the GPT-4 pattern's pieces; bpe_v1: no split at all
        hf.pre_tokenizer = pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated")
    hf.decoder = decoders.Fuse()  # tokens are plain text: joined as they are (the default joins them with spaces)
    specials = [tok.expand_token(i) for i in (tok.bos_id, tok.eos_id, tok.pad_id)]       # <bos>, <eos>, <pad>
    hf.add_special_tokens([AddedToken(s, special=True) for s in specials])               # ids vocab_len .. + 2
    hf.post_processor = processors.TemplateProcessing(single=f"{specials[0]} $A", pair=f"{specials[0]} $A $B",
                                                      special_tokens=[(specials[0], tok.bos_id)])
    # split_special_tokens: a literal "<bos>" in a text is characters, as in the project, never the bos id
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=hf, bos_token=specials[0], eos_token=specials[1], pad_token=specials[2],
        clean_up_tokenization_spaces=False, split_special_tokens=True, model_max_length=max_seq_len)


# ---------------------------------------------------------------- the model card


def train_command(mcfg: ModelConfig, tcfg: TrainConfig) -> str:
    """`python train.py --key=value ...` with the settings of the run that differ from config.py's defaults (a
    derived field only where it differs from what the others derive)."""
    parts = []
    for cls, cfg in ((ModelConfig, mcfg), (TrainConfig, tcfg)):
        values, defaults = to_dict(cfg), to_dict(cls()) | {f: None for f in cls()._derived}
        given = {f: v for f, v in values.items() if defaults[f] is not None and v != defaults[f] and f not in RECORDED}
        rebuilt = to_dict(cls(**given))
        given |= {f: values[f] for f in values if defaults[f] is None and f not in RECORDED
                  and values[f] != rebuilt[f]}
        parts += [f"--{f}={str(v).lower() if isinstance(v, bool) else v}" for f, v in given.items()]
    return "python train.py " + " ".join(parts)


def model_card(name: str, path: str, mcfg: ModelConfig, tcfg: TrainConfig, tok, num_params: int) -> str:
    """README.md of the exported folder: what it is, the data, the training command, its validation bpb, the limits."""
    log = read_log(path)
    final = log[log["full_val"] == 1]
    bpb = (f"{final['val_bpb'].iloc[-1]:.4f} bits per byte on the validation split, scored in full after step "
           f"{int(final['step'].iloc[-1])}" if len(final) else "not recorded (the log has no full validation row)")
    train = (f"the TinyStories text file(s) `{tcfg.data_path}`" if tcfg.data_path
             else f"TinyStories, the hub dataset `{HUB_DATASET}`")
    val = (getattr(tcfg, "val_text", None) or (f"`{tcfg.val_data_path}`" if tcfg.val_data_path else
           f"the last {tcfg.val_fraction:.0%} of the stories of the training text, held out"))
    T = mcfg.max_seq_len
    untied = (" The run ties its input and output embeddings; the input copy is written scaled by sqrt(dim), which "
              "Llama does not apply, so the file holds both." if mcfg.weight_tying and mcfg.scale_first_resid else "")
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [llama, tinystories, futureformer]
---

# {name}

A tiny Llama-style language model of children's stories, the baseline (`fs_periods=0`) of the FutureFormer project,
trained in plain PyTorch and exported with `python export.py {name} OUT_DIR`. `LlamaForCausalLM` computes the run's
own logits (checked to {TOLERANCE:g} when it was exported).

- **Model:** {num_params:,} parameters; {mcfg.num_layers} layers of width {mcfg.dim}; {mcfg.num_q_heads} query heads \
sharing {mcfg.num_kv_heads} key/value head(s) of width {mcfg.head_dim}; a gated {mcfg.mlp_nonlinearity} MLP of width \
{hidden_width(mcfg.dim, mcfg.mlp_hidden_mult, mcfg.mlp_gated)}; RMSNorm; rotary positions (theta {mcfg.theta:g}); \
a context of {T} tokens.{untied}
- **Tokenizer:** `{mcfg.tokenizer}`, a character-level BPE of {mcfg.vocab_len} tokens plus `<bos>`, `<eos>`, `<pad>` \
(ids {tok.bos_id}..{tok.pad_id}); `tokenizer.json` splits text as the project does.
- **Data:** trained on {train} for {tcfg.max_iters} steps of {tcfg.batch_size} x {T} tokens; validated on {val}.
- **Validation:** {bpb} (bos and eos counted).
- **Training command** (with config.py's defaults when it was exported): `{train_command(mcfg, tcfg)}`

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model, tok = AutoModelForCausalLM.from_pretrained(FOLDER), AutoTokenizer.from_pretrained(FOLDER)
ids = tok("Once upon a time", return_tensors="pt")          # <bos> first, as the project encodes
out = model.generate(**ids, do_sample=False, max_new_tokens=100)
print(tok.decode(out[0], skip_special_tokens=True))
```

`generation_config.json` samples from the model's own odds (temperature 1, no top-k or top-p), as the project's
`inference.py` does by default, never draws `<bos>` or `<pad>`, and stops at `<eos>` or after {MAX_NEW_TOKENS} tokens.

**Limits.** A tiny model of TinyStories' simple English: it writes short children's stories and little else, and
knows no facts. The tokenizer drops characters outside its alphabet of {len(tok.alphabet)}. The model saw {T} tokens
at most: past that, the project's generator slides its window (keeping the newest half), while transformers runs the
rotary positions on past what the model was trained on, so long generations differ and degrade. It was not trained
to follow instructions, and its text is not checked for anything.
"""


# ---------------------------------------------------------------- export


def missing_folders(path: str) -> list[str]:
    """`path` and the folders above it that do not exist yet, deepest first."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing


def export(run: str, out_dir: str, trained_dir: str | None = None) -> str:
    """Write the baseline run `run` (a name in trained_dir, default trained/, or a run folder's path) into the new
    folder `out_dir` as a transformers model with its tokenizer; returns out_dir. Raises ExportError (or the
    FileNotFoundError / ValueError of the run's loader) with one line, and writes nothing, for a bad input."""
    check_out_dir(out_dir)
    path = run_path(run, trained_dir)
    mcfg, tcfg = load_configs(path)
    check_exportable(run, mcfg, path)
    transformers, _ = hf_libraries()
    model, tok, _ = load_model(path, device="cpu")
    hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**llama_config(mcfg, tok)))
    hf_model.load_state_dict(llama_weights(model.state_dict(), mcfg), strict=True)
    hf_model.eval()
    hf_model.generation_config = transformers.GenerationConfig(
        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, max_new_tokens=MAX_NEW_TOKENS,
        suppress_tokens=[tok.bos_id, tok.pad_id], do_sample=True, temperature=1.0, top_k=0, top_p=1.0)
    hf_tok = hf_tokenizer(tok, mcfg.max_seq_len)
    ids = tok.encode(CHECK_TEXT)
    if hf_tok(CHECK_TEXT)["input_ids"] != ids:
        raise ExportError("the exported tokenizer splits a test sentence differently from the run's: not exported "
                          "(a bug in export.py)")
    with torch.no_grad():
        x = torch.tensor([ids])
        diff = (hf_model(x).logits - model(x)[0]).abs().max().item()
    if not diff <= TOLERANCE:
        raise ExportError(f"the exported model's logits differ from the run's by {diff:.2g} (more than "
                          f"{TOLERANCE:g}): not exported (a bug in export.py, or a transformers it does not know)")

    parent = os.path.dirname(os.path.abspath(out_dir))
    made = missing_folders(parent)  # created here, and removed again if writing fails
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.", dir=parent)
    try:
        hf_model.save_pretrained(tmp)  # config.json, generation_config.json, model.safetensors
        hf_tok.save_pretrained(tmp)    # tokenizer.json, tokenizer_config.json
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(os.path.basename(os.path.normpath(path)), path, mcfg, tcfg, tok, model.num_params()))
        umask = os.umask(0)
        os.umask(umask)
        for p in [tmp] + [os.path.join(tmp, f) for f in os.listdir(tmp)]:  # mkdtemp made the folder private
            os.chmod(p, (0o777 if os.path.isdir(p) else 0o666) & ~umask)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)  # an empty folder given as OUT_DIR (checked above)
        os.rename(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in made:  # deepest first
            if os.path.isdir(d) and not os.listdir(d):
                os.rmdir(d)
        raise
    return out_dir


# ---------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as for every other bad input
        print(f"error: {message} (usage: python export.py RUN OUT_DIR [--trained_dir=PATH])", file=sys.stderr)
        sys.exit(2)


def main(argv=None) -> int:
    p = _Parser(description="Export a trained baseline run as a Hugging Face transformers model with its tokenizer.",
                epilog="example: python export.py baseline hf/baseline  (needs pip install -r requirements-export.txt)")
    p.add_argument("run", help="a run folder in trained/ (or the path to a run folder)")
    p.add_argument("out_dir", help="a new (or empty) folder to write the model into")
    p.add_argument("--trained_dir", default=None, help="where the runs are (default: trained/)")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # no "Writing model shards" bar on the terminal
    try:
        export(args.run, args.out_dir, args.trained_dir)
    except (ValueError, OSError) as e:  # OSError: FileNotFoundError, FileExistsError, a full disk, a read-only folder
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out_dir}: load it with AutoModelForCausalLM.from_pretrained({args.out_dir!r}) and "
          f"AutoTokenizer.from_pretrained({args.out_dir!r})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (nothing is half-written: files are replaced whole)
        print("\nexport.py: interrupted", file=sys.stderr)
        sys.exit(130)
