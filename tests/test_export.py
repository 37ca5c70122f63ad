"""export.py: a baseline run written as a Hugging Face transformers folder loads back offline and computes what the
run computes: the same logits (to 1e-4) on the validation excerpt's first windows, the same greedy tokens, and a
tokenizer that gives the project's ids on the whole excerpt. A FutureFormer and every bad input are refused with one
line, and nothing is written. Offline: every model is a tiny run trained into a temporary folder, or the committed
trained/baseline exported into one."""

import json
import os
import shutil
import socket
import subprocess
import sys
import types

import pytest
import torch
from conftest import needs_sample, tiny_configs

pytest.importorskip("transformers", reason="the export extra is not installed: pip install -r requirements-export.txt")

import export  # noqa: E402
from config import ModelConfig, TrainConfig, parse_overrides, to_dict  # noqa: E402
from data import VALID_SAMPLE_PATH, get_tokenizer, read_stories  # noqa: E402
from generation import encode_prompt, generate, generate_ids  # noqa: E402
from runs import REPO_DIR, TRAINED_DIR, load_configs, load_model, read_log  # noqa: E402

PROMPTS = ("Once upon a time", "Tom and Lily went to the park. Tom saw a", "The little cat was sad because")
WINDOWS = 4  # the validation excerpt's first windows, max_seq_len tokens each


def _committed_tokenizers() -> set:
    """(tokenizer, size) of every run in trained/ (weightless research runs included)."""
    found = set()
    for name in os.listdir(TRAINED_DIR):
        path = os.path.join(TRAINED_DIR, name, "model_config.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
            found.add((cfg["tokenizer"], cfg["vocab_len"]))
    return found


def _load_hf(folder):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)


def _valid_windows(tok, T: int, n: int = WINDOWS):
    """The first n windows of T tokens of the validation excerpt, encoded as data.py does (bos, story, eos)."""
    stream = []
    for story in read_stories(VALID_SAMPLE_PATH):
        stream += tok.encode(story, bos=True, eos=True)
        if len(stream) >= n * T:
            break
    return torch.tensor(stream[:n * T]).view(n, T)                                     # (n, T)


@pytest.fixture(scope="module")
def tiny_export(tiny_runs, tmp_path_factory):
    """(run name, trained_dir, exported folder) of the tiny baseline."""
    out = str(tmp_path_factory.mktemp("export") / "tiny_base")
    export.export("tiny_base", out, tiny_runs["trained_dir"])
    return "tiny_base", tiny_runs["trained_dir"], out


@pytest.fixture(scope="module")
def baseline_export(tmp_path_factory):
    """(run name, trained_dir, exported folder) of the committed trained/baseline."""
    out = str(tmp_path_factory.mktemp("export") / "baseline")
    export.export("baseline", out)
    return "baseline", None, out


def _check_logits(name, trained_dir, folder):
    model, tok, mcfg = load_model(name, trained_dir, "cpu")
    hf_model, _ = _load_hf(folder)
    x = _valid_windows(tok, mcfg.max_seq_len)
    with torch.no_grad():
        ours, theirs = model(x)[0], hf_model(x).logits                                  # (n, T, V) each
    assert theirs.shape == ours.shape
    diff = (theirs - ours).abs().max().item()
    assert diff <= 1e-4, f"{name}: the exported logits differ by {diff:.3g} on {x.numel()} validation positions"


def _check_greedy(name, trained_dir, folder, max_new: int):
    model, tok, mcfg = load_model(name, trained_dir, "cpu")
    hf_model, hf_tok = _load_hf(folder)
    for prompt in PROMPTS:
        ids = encode_prompt(prompt, tok)
        assert hf_tok(prompt)["input_ids"] == ids
        assert len(ids) + max_new <= mcfg.max_seq_len  # within the context: past it the project slides its window
        ours = generate_ids(ids, model, tok, max_gen_len=max_new, temperature=0, compile=False)
        out = hf_model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=max_new)[0].tolist()
        theirs = out[:-1] if out[-1] == tok.eos_id else out  # transformers keeps the eos it stopped at
        assert theirs == ours, f"{name}, {prompt!r}: greedy tokens differ"
        assert hf_tok.decode(out, skip_special_tokens=True) == tok.decode(ours)


# ---------------------------------------------------------------- the tiny run


@needs_sample
def test_tiny_logits_match_on_validation_windows(tiny_export):
    _check_logits(*tiny_export)


@needs_sample
def test_tiny_greedy_generation_matches(tiny_export):
    _check_greedy(*tiny_export, max_new=40)


@needs_sample
def test_folder_holds_the_mapped_config_and_a_model_card(tiny_export):
    name, trained_dir, folder = tiny_export
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "generation_config.json", "model.safetensors",
                                          "tokenizer.json", "tokenizer_config.json"]
    from transformers import AutoConfig, GenerationConfig

    mcfg, tcfg = load_configs(name, trained_dir)
    c = AutoConfig.from_pretrained(folder)
    assert (c.model_type, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
            c.head_dim, c.rms_norm_eps, c.vocab_size, c.max_position_embeddings, c.tie_word_embeddings) == (
        "llama", mcfg.dim, mcfg.num_layers, mcfg.num_q_heads, mcfg.num_kv_heads, mcfg.head_dim, mcfg.eps,
        mcfg.vocab_len + 3, mcfg.max_seq_len, False)  # untied: only the input embeddings carry the sqrt(dim) scale
    assert c.rope_parameters["rope_theta"] == mcfg.theta
    g = GenerationConfig.from_pretrained(folder)
    assert (g.bos_token_id, g.eos_token_id, g.pad_token_id) == (mcfg.vocab_len, mcfg.vocab_len + 1, mcfg.vocab_len + 2)
    assert sorted(g.suppress_tokens) == [mcfg.vocab_len, mcfg.vocab_len + 2]  # never drawn, as in generation.py
    card = open(os.path.join(folder, "README.md"), encoding="utf-8").read()
    bpb = read_log(name, trained_dir).query("full_val == 1")["val_bpb"].iloc[-1]
    assert f"{bpb:.4f} bits per byte" in card
    assert export.train_command(mcfg, tcfg) in card and "**Limits.**" in card


@needs_sample
def test_train_command_rebuilds_the_configs(tiny_runs):
    mcfg, tcfg = load_configs("tiny_base", tiny_runs["trained_dir"])
    args = export.train_command(mcfg, tcfg).split()
    assert args[:2] == ["python", "train.py"]
    (m, t), _ = parse_overrides(args[2:], ModelConfig, TrainConfig)
    assert ModelConfig(**m) == mcfg
    recorded = set(export.RECORDED)
    assert {k: v for k, v in to_dict(TrainConfig(**t)).items() if k not in recorded} == {
        k: v for k, v in to_dict(tcfg).items() if k not in recorded}


@needs_sample
def test_from_pretrained_needs_no_network(tiny_export, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("this test allows no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    hf_model, hf_tok = _load_hf(tiny_export[2])
    ids = hf_tok("Once upon a time", return_tensors="pt")
    assert hf_model.generate(**ids, do_sample=False, max_new_tokens=5).shape[1] > ids["input_ids"].shape[1]


# ---------------------------------------------------------------- the committed baseline


@pytest.mark.slow
@needs_sample
def test_baseline_logits_match_on_validation_windows(baseline_export):
    _check_logits(*baseline_export)


@pytest.mark.slow
def test_baseline_greedy_text_matches_inference_py(baseline_export):
    """The committed baseline's greedy text through transformers is inference.py's, in process and on the shell."""
    _check_greedy(*baseline_export, max_new=100)
    hf_model, hf_tok = _load_hf(baseline_export[2])
    model, tok, _ = load_model("baseline")
    texts = []
    for prompt in PROMPTS:
        out = hf_model.generate(**hf_tok(prompt, return_tensors="pt"), do_sample=False, max_new_tokens=60)[0]
        texts.append(hf_tok.decode(out, skip_special_tokens=True))
        assert texts[-1] == generate(prompt, model, tok, max_gen_len=60, temperature=0, compile=False)
    shell = subprocess.run([sys.executable, "inference.py", "baseline", *PROMPTS, "--temperature=0", "--max_len=60",
                            "--device=cpu", "--compile=false"], cwd=REPO_DIR, capture_output=True, text=True,
                           timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout == "\n\n".join(texts) + "\n"


# ---------------------------------------------------------------- the tokenizer


# unknown characters inside words ("Th€e" is the piece "The" to the project, not "Th" and "e"), special-token names,
# digits, runs of spaces, an empty text
TRICKY = ("Lily's cat€ said: “Hi!!”…\n\n  It's 12345 o'clock, ¡olé! <bos> <eos>\tdone  \n", "Th€e c€at s€at.", "",
          " ", "€€€")


@needs_sample
@pytest.mark.parametrize("name,size", sorted(_committed_tokenizers() | {("bpe_v1", s) for _, s in
                                                                       _committed_tokenizers()}))
def test_tokenizer_gives_the_projects_ids_on_the_validation_excerpt(name, size, tmp_path):
    """Every story of the excerpt, and texts with unknown characters, special-token names, digits and spaces: the
    transformers tokenizer and the tokenizers library's tokenizer.json give the project's ids (bos first) and text."""
    from transformers import AutoTokenizer

    from tokenizers import Tokenizer

    tok = get_tokenizer(name, size)
    export.hf_tokenizer(tok, 256).save_pretrained(tmp_path)
    hf_tok, raw = AutoTokenizer.from_pretrained(tmp_path), Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    raw.encode_special_tokens = True  # what split_special_tokens sets in transformers (tokenizer.json cannot hold it)
    texts = read_stories(VALID_SAMPLE_PATH) + list(TRICKY)
    ours = [tok.encode(t) for t in texts]
    assert [e.ids for e in raw.encode_batch(texts)] == ours
    assert hf_tok(texts)["input_ids"] == ours
    assert hf_tok.batch_decode(ours, skip_special_tokens=True) == [tok.decode(ids) for ids in ours]


# ---------------------------------------------------------------- refusals and bad input: one line, nothing written


def _refused(capsys, args, *words):
    try:
        code = export.main(args)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_futureformer_is_refused(tmp_path, capsys):
    out = tmp_path / "new" / "out"
    _refused(capsys, ["futureformer", str(out)], "FutureFormer", "fs_periods=3", "baseline")
    assert os.listdir(tmp_path) == []


@needs_sample
def test_bad_inputs_get_one_line_and_nothing_written(tiny_runs, tmp_path, capsys):
    trained_dir = tiny_runs["trained_dir"]
    _refused(capsys, ["no_such_run", str(tmp_path / "a"), f"--trained_dir={trained_dir}"], "no trained model")
    _refused(capsys, ["tiny_ff", str(tmp_path / "a"), f"--trained_dir={trained_dir}"], "FutureFormer")
    weightless = tmp_path / "runs" / "weightless"  # a research run committed with configs and log, no model.pth
    shutil.copytree(os.path.join(trained_dir, "tiny_base"), weightless, ignore=shutil.ignore_patterns("model.pth"))
    _refused(capsys, ["weightless", str(tmp_path / "a"), f"--trained_dir={weightless.parent}"], "no weights")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    _refused(capsys, ["tiny_base", str(full), f"--trained_dir={trained_dir}"], "not empty")
    _refused(capsys, ["tiny_base", str(full / "keep.txt"), f"--trained_dir={trained_dir}"], "is a file")
    _refused(capsys, ["tiny_base"], "usage")
    assert sorted(os.listdir(tmp_path)) == ["full", "runs"] and os.listdir(full) == ["keep.txt"]


@needs_sample
def test_a_failed_write_leaves_nothing(tiny_runs, tmp_path, monkeypatch):
    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export, "model_card", broken)
    with pytest.raises(OSError, match="disk full"):
        export.export("tiny_base", str(tmp_path / "new" / "deeper" / "out"), tiny_runs["trained_dir"])
    assert os.listdir(tmp_path) == []


def test_a_missing_library_is_one_line(monkeypatch):
    """Without the Hugging Face library, `import tokenizers` finds this repository's tokenizers/ folder as a namespace
    package (it has no __init__.py): the exporter says to install the extra instead of failing later."""
    folder = types.ModuleType("tokenizers")
    folder.__path__ = [os.path.join(REPO_DIR, "tokenizers")]
    monkeypatch.setitem(sys.modules, "tokenizers", folder)
    with pytest.raises(export.ExportError, match="requirements-export.txt"):
        export.hf_libraries()


@pytest.mark.slow
@needs_sample
def test_command_line_from_the_repository_root_imports_the_real_library(tiny_runs, tmp_path):
    """Run from the repository root, whose tokenizers/ folder is first on sys.path, export.py imports the Hugging Face
    tokenizers library, and writes a folder that loads."""
    def run(*args):
        return subprocess.run([sys.executable, *args], cwd=REPO_DIR, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    out = tmp_path / "out"
    done = run("export.py", "tiny_base", str(out), f"--trained_dir={tiny_runs['trained_dir']}")
    assert done.returncode == 0 and done.stdout.startswith("wrote "), done.stderr
    where = run("-c", "import export; export.hf_libraries(); import tokenizers; print(tokenizers.__file__)")
    assert where.returncode == 0, where.stderr
    library = where.stdout.strip()
    assert library.endswith(os.path.join("tokenizers", "__init__.py"))
    assert not library.startswith(os.path.join(REPO_DIR, "tokenizers"))
    _load_hf(str(out))


# ---------------------------------------------------------------- other baselines: every mapped option


@pytest.mark.slow
@needs_sample
@pytest.mark.parametrize("options", [
    dict(weight_tying=False),                                   # its own output matrix
    dict(scale_first_resid=False),                              # no sqrt(dim) scale: stays tied
    dict(num_q_heads=4, num_kv_heads=2, mlp_nonlinearity="GeLU", mlp_bias=True, theta=500.0, eps=1e-5),
], ids=["untied", "unscaled_tied", "gqa_gelu_bias"])
def test_other_baselines_export_faithfully(options, data_cache_dir, tmp_path):
    from train import train

    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, model_name="variant", max_iters=4, eval_interval=2,
                              **options)
    train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    export.export("variant", str(tmp_path / "out"), str(tmp_path))
    hf_model, _ = _load_hf(str(tmp_path / "out"))
    assert hf_model.config.tie_word_embeddings == (mcfg.weight_tying and not mcfg.scale_first_resid)
    _check_logits("variant", str(tmp_path), str(tmp_path / "out"))
