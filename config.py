"""Every editable setting of the model and of training, as two dataclasses.

Edit the defaults here, or override them without editing: `ModelConfig(dim=64)`,
`config.replace(cfg, dim=64)`, or `python train.py --dim=64`. Every field is annotated, so
it is saved to `trained/<run>/*_config.json` and reloads unchanged. A field left at `None` is
derived in `__post_init__` (the saved JSON holds the derived value). A bad value raises
`ValueError` naming the field, the value and what is allowed.

Use `config.replace` rather than `dataclasses.replace`: the latter copies derived values, so
`dataclasses.replace(ModelConfig(), dim=64)` would keep head_dim=32 from dim=128.
"""

import dataclasses
import math
import os
from dataclasses import dataclass

from modules.pool_ops import compression

TOKENIZERS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizers")

NORM_TYPES = ("RMSNorm", "LayerNorm", "CosineNorm")
NONLINEARITIES = ("ReLU", "GeLU", "SiLU")
POOL_TYPES = ("sum", "mean", "max", "parametric_sum", "parametric_max", "flatten", "conv", "attention",
              "self_attention")
LEARNED_POOL_TYPES = ("parametric_sum", "parametric_max", "flatten", "conv", "attention", "self_attention")
FS_LOSSES = ("cosine", "mse", "mae", "bce", "rank")
VOCAB_FS_LOSSES = ("bce", "rank")  # scored on the prediction's vocabulary logits: no pooler, no target vectors
FS_LAMBDA_SCHEDULES = ("constant", "decay", "reverse")
FS_ARRANGEMENTS = ("staggered", "parallel")
FS_MEMORIES = ("horizon", "causal", "self")
FS_OUTPUT_LAYERS = ("linear", "mlp", "layer")
FS_ATTENTIONS = ("sequential", "parallel", "joint", "dual")
COMPRESS_FREQS = ("constant", "linear", "root", "log", "poly")
ANNEAL_TYPES = ("cos", "lin")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "bf16", "fp32")


def _bad(field, value, allowed):
    shown = repr(value) if not isinstance(value, (list, dict, str)) or len(value) <= 60 else (
        f"{repr(value)[:60]}...")  # a value read from a damaged file can be megabytes long
    return ValueError(f"{field}={shown} is not allowed: {allowed}")


def _check_choice(field, value, choices):
    if value not in choices:
        raise _bad(field, value, f"choose one of {list(choices)}")


def _check_range(field, value, lo=None, hi=None, lo_open=False, hi_open=False, kind=(int, float)):
    if isinstance(value, bool) or not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise _bad(field, value, f"must be a number ({names})")
    if not math.isfinite(value):
        raise _bad(field, value, "must be a finite number")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise _bad(field, value, f"must be {'>' if lo_open else '>='} {lo}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise _bad(field, value, f"must be {'<' if hi_open else '<='} {hi}")


@dataclass
class ModelConfig:
    # --- trunk: a Llama-style decoder ---
    dim: int = 128                    # residual stream width; small models: 64-256
    num_layers: int = 6               # all layers, future-sight ones included; small models: err on the side of many
    num_q_heads: int = 4              # query heads of self-attention
    num_kv_heads: int = 1             # key/value heads: 1 = multi-query, num_q_heads = multi-head, between = grouped
    head_dim: int | None = None       # width of one head; None = dim // num_q_heads
    theta: float = 10_000.0           # RoPE base frequency; larger = slower-turning positions
    max_seq_len: int = 256            # context length in tokens
    mlp_hidden_mult: float = 4.0      # MLP hidden width = mult * dim (x 2/3 when gated, to keep the parameter count)
    mlp_nonlinearity: str = "SiLU"    # ReLU, GeLU or SiLU
    mlp_gated: bool = True            # gated MLP: SiLU + gate = SwiGLU, GeLU + gate = GeGLU
    mlp_bias: bool = False            # biases in the MLP's linear layers
    norm_type: str = "RMSNorm"        # RMSNorm, LayerNorm or CosineNorm
    norm_affine: bool = True          # learned per-channel scale after normalising
    norm_bias: bool = False           # learned per-channel shift too (needs norm_affine)
    eps: float = 1e-6                 # keeps norms from dividing by zero
    scale_first_resid: bool = True    # multiply embeddings by sqrt(dim) (Gemma-style)
    second_resid_norm: bool = False   # also norm each sub-layer's output before adding it to the residual
    weight_tying: bool = True         # share the embedding matrix with the output projection
    dropout_rate: float = 0.1         # dropout on the embeddings and on every residual branch; 0.0-0.2
    # --- tokenizer ---
    tokenizer: str = "bpe_v2"         # a folder of tokenizers/: bpe_v1 or bpe_v2
    vocab_len: int = 1024             # tokenizer size without bos, eos, pad (ids vocab_len .. vocab_len + 2)
    # --- future sight (fs_periods = 0 turns all of it off: a plain GPT) ---
    fs_mult: int = 2                  # chunk k holds fs_mult**k tokens: 2 -> +2..+3, +4..+7, +8..+15
    fs_periods: int = 3               # future chunks P; also the number of future-sight layers (the last P)
    fs_loss_lambda: float = 0.3       # chunk k's loss weighs lambda**k; 0 keeps the layers, drops the objective
    fs_lambda_schedule: str = "constant"  # weights over training: constant, decay (all to 0), reverse (furthest first)
    fs_lambda_end: float = 1.0        # fraction of the run by which decay / reverse have brought every weight to 0
    fs_loss: str = "cosine"           # cosine, mse, mae, bce (bag of the chunk's tokens) or rank (their order)
    fs_arrangement: str = "staggered"  # staggered: predict far chunks first, coarse to fine; parallel: all at once
    fs_memory: str = "horizon"        # predictions position t attends to: horizon, causal or self (docs/design.md §2)
    fs_output_layer: str = "linear"   # head predicting each chunk: linear, mlp, or layer (a transformer layer first)
    fs_head_norm: bool = True         # norm each head's input; False saves a norm per chunk (scale-free with cosine)
    fs_cross_rope: bool = True        # rotary positions on cross-attention keys at the time each prediction is about
    fs_attention: str = "sequential"  # how fs layers read the memory: sequential, parallel, joint, dual (layer.py)
    fs_shared_memory_kv: bool = False  # project each prediction's keys/values once for all future-sight layers
    fs_detach_targets: bool = True    # build chunk targets without gradient, so they cannot collapse
    pool_type: str = "mean"           # how a chunk's token embeddings become its target vector(s); see POOL_TYPES
    pre_pool_norm: bool = True        # normalise the embeddings before pooling them
    pool_output_linear: bool = False  # a learned linear layer after pooling
    pool_bias: bool = False           # biases in the pooler's linear layers
    compress_freq: str = "constant"   # how many vectors chunk k is compressed into: constant, linear, root, log, poly
    compress_freq_n: float = 1        # the n of compress_freq (docs/design.md §1); constant 1 = one vector per chunk
    # --- cross-attention over the future memory (None = same as self-attention) ---
    ca_num_q_heads: int | None = None
    ca_num_kv_heads: int | None = None
    ca_head_dim: int | None = None

    def __post_init__(self):
        _remember_derived(self)
        for name in ("dim", "num_layers", "num_q_heads", "num_kv_heads", "max_seq_len", "vocab_len"):
            _check_range(name, getattr(self, name), lo=1, kind=int)
        _check_range("theta", self.theta, lo=0, lo_open=True)
        _check_range("eps", self.eps, lo=0, lo_open=True)
        _check_range("mlp_hidden_mult", self.mlp_hidden_mult, lo=0, lo_open=True)
        _check_range("dropout_rate", self.dropout_rate, lo=0, hi=1, hi_open=True)
        _check_choice("mlp_nonlinearity", self.mlp_nonlinearity, NONLINEARITIES)
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        if self.norm_bias and not self.norm_affine:
            raise _bad("norm_bias", self.norm_bias, "a norm bias needs norm_affine=True")
        if self.head_dim is None:
            if self.dim % self.num_q_heads:
                raise _bad("num_q_heads", self.num_q_heads, f"must divide dim={self.dim} (or set head_dim)")
            self.head_dim = self.dim // self.num_q_heads
        self._check_heads("", self.num_q_heads, self.num_kv_heads, self.head_dim)
        if self.vocab_len > 65_533:
            raise _bad("vocab_len", self.vocab_len, "token ids (vocab_len + 3 specials) must fit in uint16")
        tok_dir = os.path.join(TOKENIZERS_DIR, str(self.tokenizer))
        if not os.path.isfile(os.path.join(tok_dir, "tokenizer.py")):
            names = sorted(d for d in os.listdir(TOKENIZERS_DIR)
                           if os.path.isfile(os.path.join(TOKENIZERS_DIR, d, "tokenizer.py")))
            raise _bad("tokenizer", self.tokenizer, f"choose a folder of tokenizers/: {names}")
        # future sight
        _check_range("fs_periods", self.fs_periods, lo=0, kind=int)
        _check_range("fs_mult", self.fs_mult, lo=2, kind=int)
        _check_range("fs_loss_lambda", self.fs_loss_lambda, lo=0)
        _check_choice("fs_lambda_schedule", self.fs_lambda_schedule, FS_LAMBDA_SCHEDULES)
        _check_range("fs_lambda_end", self.fs_lambda_end, lo=0, hi=1, lo_open=True)
        _check_choice("fs_loss", self.fs_loss, FS_LOSSES)
        _check_choice("fs_arrangement", self.fs_arrangement, FS_ARRANGEMENTS)
        _check_choice("fs_memory", self.fs_memory, FS_MEMORIES)
        _check_choice("fs_output_layer", self.fs_output_layer, FS_OUTPUT_LAYERS)
        _check_choice("fs_attention", self.fs_attention, FS_ATTENTIONS)
        if not isinstance(self.fs_shared_memory_kv, bool):
            raise _bad("fs_shared_memory_kv", self.fs_shared_memory_kv, "must be a bool (True or False)")
        _check_choice("pool_type", self.pool_type, POOL_TYPES)
        _check_choice("compress_freq", self.compress_freq, COMPRESS_FREQS)
        _check_range("compress_freq_n", self.compress_freq_n, lo=0, lo_open=True)
        if self.compress_freq == "log" and self.compress_freq_n < 2:
            raise _bad("compress_freq_n", self.compress_freq_n, "compress_freq='log' needs a base n >= 2")
        if self.num_layers <= self.fs_periods:
            raise _bad("num_layers", self.num_layers,
                       f"must be greater than fs_periods={self.fs_periods}: the last fs_periods layers are "
                       "future-sight layers and at least one body layer must come before them")
        longest = self.fs_mult ** self.fs_periods if self.fs_periods else 1
        if longest > self.max_seq_len:
            raise _bad("fs_periods", self.fs_periods,
                       f"the longest chunk, fs_mult**fs_periods = {longest} tokens, must not be longer than "
                       f"max_seq_len={self.max_seq_len}")
        for i, length in enumerate(self.chunk_lens):
            c = compression(self.compress_freq, self.compress_freq_n, i)
            if c < 1 or c > length or length % c:
                raise _bad("compress_freq_n", self.compress_freq_n,
                           f"compress_freq={self.compress_freq!r} gives {c} vectors for chunk {i + 1} of "
                           f"{length} tokens; it must be between 1 and {length} and divide {length}")
        learned_pool = self.pool_type in LEARNED_POOL_TYPES or self.pool_output_linear
        if self.fs_periods and self.fs_loss in VOCAB_FS_LOSSES and learned_pool:
            raise _bad("pool_type", self.pool_type,
                       f"fs_loss={self.fs_loss!r} trains against the chunk's tokens themselves and uses no pooler; "
                       "choose sum, mean or max and pool_output_linear=False")
        if self.fs_periods and self.fs_detach_targets and learned_pool:
            raise _bad("fs_detach_targets", self.fs_detach_targets,
                       f"pool_type={self.pool_type!r} / pool_output_linear={self.pool_output_linear} has "
                       "parameters that detached targets would never train: either set "
                       "fs_detach_targets=False (and watch target diversity for collapse) or use a "
                       "parameter-free pool_type (sum, mean, max) with pool_output_linear=False")
        # cross-attention heads
        if self.fs_periods and self.fs_attention in ("joint", "dual"):  # self-attention's queries read the memory
            for name, own in (("ca_num_q_heads", self.num_q_heads), ("ca_num_kv_heads", self.num_kv_heads),
                              ("ca_head_dim", self.head_dim)):
                if getattr(self, name) is None:
                    setattr(self, name, own)
                elif getattr(self, name) != own:
                    raise _bad(name, getattr(self, name), f"fs_attention={self.fs_attention!r} reads the memory "
                               f"with self-attention's heads: leave it None or set it to {own}")
        if self.ca_num_q_heads is None:
            self.ca_num_q_heads = self.num_q_heads
        if self.ca_num_kv_heads is None:
            self.ca_num_kv_heads = min(self.num_kv_heads, self.ca_num_q_heads)
        if self.ca_head_dim is None:
            if self.dim % self.ca_num_q_heads:
                raise _bad("ca_num_q_heads", self.ca_num_q_heads, f"must divide dim={self.dim} (or set ca_head_dim)")
            self.ca_head_dim = self.dim // self.ca_num_q_heads
        for name in ("ca_num_q_heads", "ca_num_kv_heads"):
            _check_range(name, getattr(self, name), lo=1, kind=int)
        self._check_heads("ca_", self.ca_num_q_heads, self.ca_num_kv_heads, self.ca_head_dim)

    def _check_heads(self, prefix, q_heads, kv_heads, head_dim):
        _check_range(f"{prefix}head_dim", head_dim, lo=2, kind=int)
        if head_dim % 2:
            raise _bad(f"{prefix}head_dim", head_dim, "must be even (rotary encodings rotate pairs)")
        if q_heads % kv_heads:
            raise _bad(f"{prefix}num_kv_heads", kv_heads, f"must divide {prefix}num_q_heads={q_heads}")

    # Derived, read-only views (not saved: they follow from the fields above).
    @property
    def vocab_size(self) -> int:
        """Rows of the embedding: the vocabulary plus bos, eos and pad."""
        return self.vocab_len + 3

    @property
    def chunk_lens(self) -> list[int]:
        """Tokens in chunk k = 1..P: fs_mult**k."""
        return [self.fs_mult ** k for k in range(1, self.fs_periods + 1)]

    @property
    def chunk_offsets(self) -> list[tuple[int, int]]:
        """(first, last) offset of chunk k = 1..P from the current position; offset 1 is the next token."""
        out, first = [], 2
        for length in self.chunk_lens:
            out.append((first, first + length - 1))
            first += length
        return out

    @property
    def chunk_vectors(self) -> list[int]:
        """c_k: vectors chunk k is compressed into."""
        return [compression(self.compress_freq, self.compress_freq_n, i) for i in range(self.fs_periods)]

    @property
    def lookahead(self) -> int:
        """H, the furthest offset any chunk reaches (1 for a plain GPT): batches carry H - 1 extra targets."""
        return self.chunk_offsets[-1][1] if self.fs_periods else 1


@dataclass
class TrainConfig:
    model_name: str | None = None     # folder under trained/; None = architecture, size and date
    group: str | None = None          # seeds of one configuration share a group (train.py --seeds sets it)
    batch_size: int = 32              # sequences per forward pass (a micro-batch when grad_accum_steps > 1)
    grad_accum_steps: int = 1         # micro-batches per optimizer step: the global batch is batch_size x this
    processes: int | None = None      # recorded by train(): processes (torchrun) that trained it; x the above
    train_tokens: int | None = None   # recorded by train(): tokens of the training split (bos and eos included)
    passes: float | None = None       # recorded by train(): passes max_iters makes over the training split
    machine: str | None = None        # recorded by train(): the CPU (and its bf16 units) or GPU that trained it
    started: str | None = None        # recorded by train(): when the run started (UTC, ISO 8601)
    val_text: str | None = None       # recorded by train(): what it validated on, a file and its text's fingerprint
    changes: list | None = None       # recorded by train(): settings changed on resuming, [{"step": s, k: [old, new]}]
    max_iters: int = 1000             # optimizer steps; 1000 x 32 x 256 = 8.2M tokens (docs/training.md: the time)
    eval_interval: int = 100          # steps between evaluations (one log_data.csv row each)
    eval_samples: int = 8             # batches per split per evaluation
    checkpoint_interval: int | None = None  # steps between checkpoints; None = no checkpoints
    grad_clip: float = 1.0            # clip the gradient's global norm to this; 0 = off
    weight_decay: float = 0.05        # AdamW decay, applied to matrices only
    lr_init: float = 1e-5             # learning rate at step 0
    lr_max: float = 3e-3              # reached at the end of warm-up and at each restart
    lr_min: float = 1e-4              # floor of annealing and of the final flat stretch
    warmup_iters: int | None = None   # None = 5% of max_iters
    final_flat_iters: int | None = None  # steps at lr_min at the very end; None = 10% of max_iters
    anneal_type: str = "cos"          # cos or lin
    num_restarts: int = 0             # warm restarts during annealing
    T_mult: float = 2.0               # each annealing cycle is T_mult times longer than the one before
    seed: int = 0                     # seeds the weights and the batches
    device: str = "auto"              # auto (CUDA, then MPS, then CPU), cuda, mps or cpu
    compile: bool | None = None       # torch.compile the model; None = auto: on CPU or CUDA for runs of >= 500 steps
    precision: str | None = None      # auto (bf16 where the GPU or CPU has bf16 units), bf16, fp32; None: bf16 on CUDA
    ema_decay: float | None = None    # evaluate and save an average of the weights (0.998: about 500 steps); None = off
    ema_save_last: bool = False       # with ema_decay: the last weights too, logged and saved as the run NAME_last
    # --- data ---
    data_path: str | None = None      # text file(s) of stories split by <|endoftext|>: a,b or data/*.txt; None = hub
    val_data_path: str | None = None  # a validation file (the official split's; offline its excerpt); None = hold out
    val_fraction: float = 0.05        # share of data_path's stories held out for validation
    data_cache_dir: str = "data_cache"  # where tokenized ids are cached (git-ignored)
    tokenize_workers: int | None = None  # processes tokenizing a new cache; None = every core from 64 MB of text on

    def __post_init__(self):
        _remember_derived(self)
        for name in ("model_name", "group"):
            _check_name(name, getattr(self, name))
        for name in ("batch_size", "grad_accum_steps", "max_iters", "eval_interval", "eval_samples"):
            _check_range(name, getattr(self, name), lo=1, kind=int)
        if self.checkpoint_interval is not None:
            _check_range("checkpoint_interval", self.checkpoint_interval, lo=1, kind=int)
        _check_range("grad_clip", self.grad_clip, lo=0)
        _check_range("weight_decay", self.weight_decay, lo=0)
        for name in ("lr_init", "lr_max", "lr_min"):
            _check_range(name, getattr(self, name), lo=0)
        if self.lr_min > self.lr_max:
            raise _bad("lr_min", self.lr_min, f"must be <= lr_max={self.lr_max}")
        _check_choice("anneal_type", self.anneal_type, ANNEAL_TYPES)
        _check_range("num_restarts", self.num_restarts, lo=0, kind=int)
        _check_range("T_mult", self.T_mult, lo=0, lo_open=True)
        _check_choice("device", self.device, DEVICES)
        if self.precision is not None:
            _check_choice("precision", self.precision, PRECISIONS)
        if self.compile is not None and not isinstance(self.compile, bool):
            raise _bad("compile", self.compile, "must be true, false or None (auto)")
        if self.ema_decay is not None:
            _check_range("ema_decay", self.ema_decay, lo=0, hi=1, lo_open=True, hi_open=True)
        if not isinstance(self.ema_save_last, bool):
            raise _bad("ema_save_last", self.ema_save_last, "must be true or false")
        if self.ema_save_last and self.ema_decay is None:
            raise _bad("ema_save_last", self.ema_save_last, "needs ema_decay: without an average the last "
                       "weights are the run itself")
        _check_range("val_fraction", self.val_fraction, lo=0, hi=1, lo_open=True, hi_open=True)
        if self.processes is not None:
            _check_range("processes", self.processes, lo=1, kind=int)
        if self.tokenize_workers is not None:
            _check_range("tokenize_workers", self.tokenize_workers, lo=1, kind=int)
        if self.changes is not None and not (isinstance(self.changes, list) and all(
                isinstance(c, dict) and isinstance(c.get("step"), int) for c in self.changes)):
            raise _bad("changes", self.changes, "train() records it when a run is resumed with other settings: "
                       "a list of {'step': N, 'field': [old, new]}")
        if self.warmup_iters is None:
            self.warmup_iters = int(0.05 * self.max_iters)
        if self.final_flat_iters is None:
            self.final_flat_iters = int(0.1 * self.max_iters)
        _check_range("warmup_iters", self.warmup_iters, lo=0, kind=int)
        _check_range("final_flat_iters", self.final_flat_iters, lo=0, kind=int)
        if self.warmup_iters + self.final_flat_iters > self.max_iters:
            raise _bad("warmup_iters", self.warmup_iters,
                       f"warmup_iters + final_flat_iters ({self.final_flat_iters}) must not exceed "
                       f"max_iters={self.max_iters}")


# Settings a resumed run may change (train(resume=..., changes=...), train.py --resume=... --lr_max=...): they steer
# the optimizer from the checkpoint's step on, and nothing done so far depends on them. After a divergence: resume
# with a lower lr_max or a tighter grad_clip. The run records each change (TrainConfig.changes).
RESUMABLE_FIELDS = ("lr_init", "lr_max", "lr_min", "grad_clip", "weight_decay", "checkpoint_interval")


def _check_name(field, value) -> None:
    """A run (or group) name is a folder name under trained_dir: no path separators, no '..', not absolute."""
    if value is None:
        return
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, value, "must be a non-empty name")
    if "/" in value or "\\" in value or os.sep in value or value in (".", "..") or os.path.isabs(value):
        raise _bad(field, value, "must be a plain folder name (runs live under trained_dir; to put them "
                                 "elsewhere, pass --trained_dir=PATH)")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _bad(field, value, "must not hold a control character (a newline, a tab): it names a folder and "
                                 "is printed in logs and progress bars")


def _remember_derived(cfg) -> None:
    """Note which fields were left to be derived (None), so `replace` derives them again."""
    object.__setattr__(cfg, "_derived", {f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) is None})


def replace(cfg, **changes):
    """A copy of `cfg` with `changes`, in which fields that were derived (left at None) are derived again
    from the new values, unless `changes` sets them. (`dataclasses.replace` would copy the old derived
    values: replacing dim would keep the old head_dim.)"""
    derived = getattr(cfg, "_derived", set())
    values = {f.name: None if f.name in derived else getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return type(cfg)(**{**values, **changes})


def to_dict(cfg) -> dict:
    """The saved form of a config: every field, derived ones included."""
    return dataclasses.asdict(cfg)


def from_dict(cls, d: dict):
    """Rebuild a config saved by `to_dict`; an unknown key is an error, not silently dropped. A TrainConfig
    saved before `precision` existed has `bf16` instead (true: bf16 autocast on CUDA only, which is precision
    None; false: fp32)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if cls is TrainConfig and "bf16" in d and "precision" not in d:
        d = {**{k: v for k, v in d.items() if k != "bf16"}, "precision": None if d["bf16"] is True else "fp32"}
    unknown = sorted(set(d) - names)
    if unknown:
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(f"unknown {cls.__name__} fields {[u[:40] for u in unknown[:5]]}{more}; "
                         f"known fields: {sorted(names)}")
    return cls(**d)


# ---------------------------------------------------------------- help, from this file's comments


def field_help(cls) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """[(group heading, [(field, default, comment)])] of a config class, read from this file: each field's
    one-line comment and the `# --- heading ---` lines between fields, so the command line's --help says what
    config.py says. A field without a comment gets its group's heading."""
    import inspect
    import re

    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    groups = [(cls.__name__, [])]
    for line in inspect.getsource(cls).splitlines():
        heading = re.match(r"\s*# --- (.*?) ---", line)
        if heading:
            groups.append((heading.group(1), []))
            continue
        field = re.match(r"\s{4}(\w+): [^=]+=[^#]*(?:#\s*(.*))?$", line)
        if field and field.group(1) in defaults:
            name = field.group(1)
            default = "None" if defaults[name] is None else str(defaults[name])
            groups[-1][1].append((name, default, field.group(2) or groups[-1][0]))
    return [(heading, fields) for heading, fields in groups if fields]


def format_help(*classes, extra: dict | None = None) -> str:
    """Every field of `classes` as `--name=default   comment`, grouped as in config.py; `extra` adds
    {"--option=VALUE": "what it does"} under "other options"."""
    blocks = []
    for cls in classes:
        for heading, fields in field_help(cls):
            title = heading if heading == cls.__name__ else f"{cls.__name__}: {heading}"
            lines = [f"  --{name}={default}".ljust(34) + f" {comment}" for name, default, comment in fields]
            blocks.append("\n".join([title, *lines]))
    if extra:
        blocks.append("\n".join(["other options", *(f"  {opt}".ljust(34) + f" {text}" for opt, text in extra.items())]))
    return "\n\n".join(blocks)


# ---------------------------------------------------------------- overrides from the command line

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _convert(field: str, text: str, annotation):
    """`text` as the type of a field annotated `annotation` (int, float, bool, str, or X | None)."""
    import types
    import typing

    kinds = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    if type(None) in kinds and text.lower() in ("none", "null"):
        return None
    kind = next(k for k in kinds if k is not type(None))
    if kind is bool:
        if text.lower() in _TRUE + _FALSE:
            return text.lower() in _TRUE
        raise ValueError(f"{field}={text!r} is not allowed: must be a bool (true or false)")
    if kind is int:
        try:
            number = float(text.replace("_", ""))
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise ValueError(f"{field}={text!r} is not allowed: must be an integer")
        return int(number)
    if kind is float:
        try:
            return float(text.replace("_", ""))
        except ValueError:
            raise ValueError(f"{field}={text!r} is not allowed: must be a number") from None
    return text


def parse_overrides(args: list[str], *classes, extra: dict | None = None) -> tuple[list[dict], dict]:
    """Parse `--key=value` (or `--key value`, or a bare `--flag` for a bool) against the fields of the
    dataclasses `classes`, converting each value to its field's type.

    Returns ([overrides for each class], {extra option: value}). `extra` maps the names of options
    that are not config fields to their types (e.g. {"resume": str}). An unknown key is a ValueError
    that names the near matches; so is a value of the wrong type. Apply the overrides with
    `dataclasses.replace(cfg, **overrides)` or `Class(**overrides)`: the config's own checks then run.
    """
    import difflib

    extra = extra or {}
    owners = {}  # key -> (index of its class, annotation)
    for i, cls in enumerate(classes):
        for f in dataclasses.fields(cls):
            owners.setdefault(f.name, (i, f.type))
    for key, kind in extra.items():
        owners.setdefault(key, (None, kind))
    found, extras, seen = [{} for _ in classes], {}, {}
    args = list(args)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--") or len(arg) == 2:
            raise ValueError(f"{arg!r} is not an option: write settings as --key=value")
        key, eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in owners:
            near = difflib.get_close_matches(key, list(owners), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join('--' + n for n in near)}?" if near else ""
            names = ", ".join(c.__name__ for c in classes)
            raise ValueError(f"unknown option --{key}{hint} (options are the fields of {names}"
                             f"{' and ' + ', '.join(extra) if extra else ''})")
        if key in seen:
            raise ValueError(f"--{key} is given twice ({seen[key]!r} and {arg!r}): give each option once")
        seen[key] = arg
        index, annotation = owners[key]
        is_bool = annotation is bool or bool in getattr(annotation, "__args__", ())  # bool, or bool | None
        if not eq:  # --key value, or a bare --flag for a bool
            if is_bool or (args and args[0].startswith("--")) or not args:
                if not is_bool:
                    raise ValueError(f"--{key} needs a value: --{key}=...")
                text = "true"
            else:
                text = args.pop(0)
        value = _convert(key, text, annotation)
        if index is None:
            extras[key] = value
        else:
            found[index][key] = value
    return found, extras
