"""Comparing trained runs: loss curves from trained/<run>/log_data.csv, a summary table, and teacher-forced
next-token accuracy on the held-out validation split.

    import model_comparison as mc
    fig = mc.plot_curves(["baseline", "futureformer"], metrics=("ntp_loss", "bpb"), splits=("train", "val"))
    table = mc.summary_table(["baseline", "futureformer"])      # one row per run
    print(mc.format_table(table))
    mc.show_predictions("futureformer", text="Once upon a time")  # per position: true token vs top-k

    python model_comparison.py                                   # every run in trained/
    python model_comparison.py baseline futureformer --x=step --num_sequences=1024 --out=cmp.png
    python model_comparison.py baseline futureformer --prompt="Once upon a time"  # + each one's greedy text

**Compare models on next-token (NTP) loss and bits per byte, never on the total loss.** A FutureFormer's
`{split}_loss` is the NTP cross-entropy *plus* its weighted future-sight losses, so it is larger than a
baseline's by construction and says nothing about how well either predicts text. `{split}_ntp_loss` is the
same quantity for every model; bits per byte (`tools.bits_per_byte`) divides it by the bytes each token covers,
which makes it comparable across tokenizers too (a loss in nats per token is not: a bigger vocabulary packs
more text into each token). Lower is better for both.

Teacher-forced means: the model reads the true text and, at each position, is scored on the token that
really comes next; its own guesses are never fed back. `evaluate` does this over many fixed windows of the
validation split (the same windows for every model that shares a tokenizer and window length), weighing every
real target equally, and reports top-k accuracy, the NTP loss, bits per byte and, for FutureFormers, how well
each future scale's prediction points the way of its target (mean cosine similarity, 1 = perfect).

Data flows one way: trained/ (weights, configs, logs) and the tokenized validation split -> tables and plots.
"""

import argparse
import hashlib
import itertools
import json
import math
import os
import re
import sys
import warnings

import matplotlib

# Scripts without a display write files only: the Agg backend. A notebook's kernel (or an MPLBACKEND
# setting) has chosen its own backend already, and inline plotting keeps working.
if ("matplotlib.pyplot" not in sys.modules and "ipykernel" not in sys.modules and not os.environ.get("MPLBACKEND")
        and sys.platform.startswith("linux") and not os.environ.get("DISPLAY")
        and not os.environ.get("WAYLAND_DISPLAY")):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import stats  # noqa: E402
import tools  # noqa: E402
from config import VOCAB_FS_LOSSES, TrainConfig, replace  # noqa: E402
from modules.flops import flops_per_token  # noqa: E402
from modules.loss import chunk_valid, chunk_windows, order_target  # noqa: E402
from modules.model import Model  # noqa: E402

X_AXES = {"tokens": "training tokens", "step": "step", "elapsed_s": "wall time (s)",
          "flops": "training FLOPs (modules/flops.py)"}
SPLIT_STYLES = {"train": "--", "val": "-"}  # train dashed, val solid
SCORES_VERSION = 1  # bump when score_windows changes what it stores: cached scores are then recomputed
SEED_SUFFIX = re.compile(r"^(?P<group>.+)_s\d+$")  # NAME_s0, NAME_s1, ...: seeds of one configuration


# ---------------------------------------------------------------- choosing runs


def resolve_names(names=None, trained_dir: str | None = None) -> list[str]:
    """`names` as a list (one name is fine); None or empty = every run in `trained_dir` (default trained/).
    A missing run is tools.run_path's FileNotFoundError (it lists the runs there and near matches); no runs
    at all is a FileNotFoundError that says so."""
    if isinstance(names, str):
        names = [names]
    names = list(names or [])
    if not names:
        names = tools.list_runs(trained_dir)
        if not names:
            raise FileNotFoundError(f"no trained runs in {trained_dir or tools.TRAINED_DIR}: train one first "
                                    "(train.ipynb, or python train.py --data_path=...)")
    for name in names:
        tools.run_path(name, trained_dir)
    return names


MAIN_RUNS = ("baseline", "futureformer", "baseline_7layers")  # the README's main comparison


def default_names(trained_dir: str | None = None, limit: int = 5) -> list[str]:
    """A readable set of runs to compare: the README's main comparison when its runs are there, plus your
    newest runs, at most `limit` in all (newest first after the main ones)."""
    runs = tools.list_runs(trained_dir)
    main = [n for n in MAIN_RUNS if n in runs]
    root = trained_dir or tools.TRAINED_DIR
    newest = sorted((n for n in runs if n not in main), reverse=True,
                    key=lambda n: os.path.getmtime(os.path.join(root, n, "model.pth")))
    return (main + newest)[:limit]


# ---------------------------------------------------------------- writing plots, safely

PLOT_MARK = "FutureFormer model_comparison.py"  # written into every PNG this file saves (its Software field)


def check_plot_path(path: str, any_png: bool = False) -> None:
    """A plot may go anywhere but into a run's folder, and may replace only a PNG this file wrote (any PNG with
    any_png, for the command line's own default file): so a mistyped --out can never overwrite weights, a log,
    a config or anyone's picture. ValueError otherwise."""
    full = os.path.abspath(path)
    folder = os.path.dirname(full)
    while True:
        if os.path.isfile(os.path.join(folder, "model_config.json")) or os.path.isfile(
                os.path.join(folder, "model.pth")):
            raise ValueError(f"{path} is inside the run folder {folder}: plots never go into a run's folder; "
                             "choose another --out (e.g. trained/model_comparison.png)")
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    if os.path.isdir(full):
        raise ValueError(f"{path} is a folder: give a file name for the plot, e.g. {os.path.join(path, 'plot.png')}")
    if os.path.exists(full):
        with open(full, "rb") as f:
            head = f.read(4096)
        if not (head.startswith(b"\x89PNG\r\n\x1a\n") and (any_png or PLOT_MARK.encode() in head)):
            raise ValueError(f"{path} exists and is not a plot model_comparison.py wrote: it is left as it is; "
                             "choose another --out, or move that file away")


def save_plot(fig, path: str, any_png: bool = False) -> None:
    """fig as a PNG at `path` (check_plot_path first), marked as this file's so that it may be replaced."""
    check_plot_path(path, any_png)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tools.replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                                           metadata={"Software": PLOT_MARK}))


# ---------------------------------------------------------------- loss curves


def _split_of(column: str) -> str | None:
    return next((s for s in tools.SPLITS if column.startswith(s + "_")), None)


def _columns(metric: str, splits, available) -> list[str]:
    """The log columns one subplot draws: `metric` itself, or the metric in each split of `splits`."""
    split = _split_of(metric)
    if splits:
        base = metric[len(split) + 1:] if split else metric
        return [f"{s}_{base}" for s in splits]
    if metric in available or split:
        return [metric]
    both = [f"{s}_{metric}" for s in tools.SPLITS]
    return both if any(c in available for c in both) else [metric]


def _trimmed(log: pd.DataFrame, trim) -> pd.DataFrame:
    """Drop the first `trim` rows (an int >= 1) or the first fraction of them (0 <= trim < 1)."""
    if isinstance(trim, bool) or not isinstance(trim, (int, float)) or trim < 0 or (
            isinstance(trim, float) and trim >= 1 and not trim.is_integer()):
        raise ValueError(f"trim={trim!r} is not allowed: a fraction 0 <= trim < 1 or a number of rows >= 1")
    n = int(trim) if trim >= 1 else int(math.floor(trim * len(log)))
    return log.iloc[n:]


def _read_log(name: str, trained_dir) -> pd.DataFrame:
    """The run's log, with a `flops` column computed from its config when the log predates it."""
    log = tools.read_log(name, trained_dir)
    if "flops" not in log.columns and "tokens" in log.columns:
        log["flops"] = log["tokens"] * flops_per_token(tools.load_configs(name, trained_dir)[0])
    return log


def plot_curves(names=None, metrics=("val_ntp_loss", "val_bpb"), x: str = "tokens", log_x: bool = False,
                log_y: bool = False, trim=0, splits=None, trained_dir: str | None = None, path: str | None = None,
                groups: dict | None = None, group_seeds: bool = True):
    """Training curves of several runs from their log_data.csv: one subplot per metric, one line per run.

    metrics: log columns, e.g. "val_ntp_loss", "val_bpb", "train_ntp_loss", "lr", "grad_norm",
        "val_fs_target_cos_1"; a name without its split ("ntp_loss") draws both splits.
    splits: e.g. ("train", "val") draws each metric in those splits, train dashed and val solid (any split
        prefix of the metric is replaced); None = the metrics as given.
    x: "tokens" (training tokens seen; fair across batch sizes and context lengths), "step", "elapsed_s" or
        "flops" (training FLOPs: fair across model sizes; computed from the config for logs without it).
    log_x, log_y: logarithmic axes (rows at x <= 0 are left out of a log x axis).
    trim: drop the first fraction (0 <= trim < 1) or the first N rows (an int) of every curve, to zoom in
        past the steep start.
    groups, group_seeds: seeds of one configuration (`find_groups`: recorded groups, NAME_s<seed> names, and
        the explicit `groups`) are drawn as one line, their mean at each step, in a band from the lowest to the
        highest seed; group_seeds=False draws every run on its own.
    path: also save the figure there as a PNG.
    The final row of a log (full_val = 1) holds val_* over the whole validation split, not a sample of
    batches: it is drawn with a dot. Returns the matplotlib Figure.
    """
    if x not in X_AXES:
        raise ValueError(f"x={x!r} is not allowed: choose one of {list(X_AXES)}")
    if isinstance(metrics, str):
        metrics = [metrics]
    names = resolve_names(names, trained_dir)
    found = find_groups(names, trained_dir, groups) if group_seeds else {n: [n] for n in names}
    logs = {}  # label -> [logs of its runs]
    for label, members in found.items():
        for name in members:
            try:
                log = _read_log(name, trained_dir)  # read first: a run without a log adds no empty group
            except FileNotFoundError as e:
                warnings.warn(f"{name}: {e}; left out of the plot", stacklevel=2)
                continue
            logs.setdefault(label, []).append(log)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics) + 2.5, 4.2), squeeze=False,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for i, (label, runs) in enumerate(logs.items()):
            color = colors[i % len(colors)]
            for log in runs:
                if x not in log.columns:
                    raise ValueError(f"{label}: log_data.csv has no column {x!r}; columns: {list(log.columns)}")
            runs = [_trimmed(log.sort_values(x, kind="stable"), trim) for log in runs]
            if log_x:
                runs = [log[log[x] > 0] for log in runs]
            for col in _columns(metric, splits, runs[0].columns):
                if any(col not in log.columns for log in runs):
                    if _split_of(col) is None or not col.split("_", 1)[1].startswith("fs_"):
                        raise ValueError(f"{label}: log_data.csv has no column {col!r}; columns: "
                                         f"{list(runs[0].columns)}")
                    continue  # a baseline has no future-sight columns
                split = _split_of(col)
                name = f"{label} (mean of {len(runs)})" if len(runs) > 1 else label
                both = pd.concat(runs).groupby(level=0)  # row i of every seed's log: the same step
                line = both[[x, col]].mean()
                ax.plot(line[x], line[col], SPLIT_STYLES.get(split, "-"), color=color,
                        label=f"{name} ({split})" if splits or split == "train" else name)
                if len(runs) > 1:
                    ax.fill_between(line[x], both[col].min(), both[col].max(), color=color, alpha=0.2, lw=0)
                full = [log[log["full_val"] == 1] for log in runs] if split == "val" else []
                full = pd.concat(full).groupby(level=0)[[x, col]].mean() if full and "full_val" in runs[0] else None
                if full is not None and len(full):
                    ax.plot(full[x], full[col], "o", color=color, markersize=4)
        split = _split_of(metric)
        ax.set_title(metric[len(split) + 1:] if splits and split else metric)
        ax.set_xlabel(X_AXES[x])
        ax.set_xscale("log" if log_x else "linear")
        ax.set_yscale("log" if log_y else "linear")
        ax.grid(alpha=0.3)
    legend = {}  # one legend for the figure, beside the axes rather than over the curves
    for ax in axes[0]:
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                legend.setdefault(line.get_label(), line)
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="outside right upper", fontsize=8)
    banded = any(len(runs) > 1 for runs in logs.values())
    fig.suptitle(("dashed: train, solid: val; dot: whole validation split" if splits else
                  "dot: whole validation split (final row of each log)")
                 + ("; band: lowest to highest seed" if banded else ""), fontsize=9)
    if path:
        save_plot(fig, path)
    return fig


# ---------------------------------------------------------------- teacher-forced evaluation


def validation_windows(data, seq_len: int, lookahead: int = 1, num_sequences: int | None = None,
                       split: str = "val"):
    """(inputs (N, T), targets (N, T + H - 1)): fixed windows of a split, from tools.eval_batches.

    The split is cut into consecutive windows of seq_len tokens (the last one padded with pad_id); with
    num_sequences set, that many are kept, evenly spaced over the whole split (so they come from many
    stories, not just the first ones); None keeps them all. Deterministic: the same data and seq_len give
    the same windows, whatever the model (a larger lookahead only adds target columns).
    """
    stream = data.split(split)
    total = len(range(0, len(stream) - 1, seq_len))  # the windows eval_batches yields
    if num_sequences is not None and num_sequences < 1:
        raise ValueError(f"num_sequences={num_sequences!r} is not allowed: an int >= 1 or None (the whole split)")
    keep = np.arange(total) if num_sequences is None or num_sequences >= total else (
        np.arange(num_sequences) * total // num_sequences)
    inputs, targets, first = [], [], 0
    for x, y in tools.eval_batches(data, split, 1024, seq_len, lookahead):
        rows = keep[(keep >= first) & (keep < first + len(x))] - first
        inputs.append(x[rows])
        targets.append(y[rows])
        first += len(x)
    return torch.cat(inputs), torch.cat(targets)


def _fingerprint(inputs) -> str:
    """A short hash of the evaluated windows: equal for two models iff they read the same tokens."""
    return hashlib.sha1(inputs.numpy().astype(np.int64).tobytes()).hexdigest()[:12]


def future_targets(model, target_ids, T: int):
    """[(target (B, T, C, D), valid (B, T))] for each future chunk k = 1..P, as the model's loss builds them
    (modules/loss.py: its poolers, pre-pool norm and mask). For fs_loss='bce', whose loss compares against a
    bag of tokens instead, the target vector is the mean normalised embedding of each sub-window's tokens:
    with tied weights that is the direction whose logits favour exactly the bag's tokens; for fs_loss='rank',
    the same embeddings weighed by the order target (modules/loss.order_target), the sooner the heavier."""
    cfg, loss_fn = model.cfg, model.loss_fn
    if cfg.fs_loss not in VOCAB_FS_LOSSES:
        return loss_fn.targets(target_ids, T, model.embedding)
    H = cfg.lookahead
    cols = F.pad(target_ids[:, :T + H - 1], (0, max(0, T + H - 1 - target_ids.shape[1])), value=loss_fn.pad_id)
    out = []
    for (first, last), c in zip(cfg.chunk_offsets, cfg.chunk_vectors):
        ids = chunk_windows(cols, T, first, last, loss_fn.pad_id)                   # (B, T, L)
        sub = ids.unflatten(2, (c, -1))                                              # (B, T, C, W)
        e = F.normalize(model.embedding(sub).float(), dim=-1)                       # (B, T, C, W, D)
        target = (order_target(sub)[..., None] * e).sum(3) if cfg.fs_loss == "rank" else e.mean(3)
        out.append((target, chunk_valid(ids, loss_fn.eos_id, loss_fn.pad_id)))
    return out


@torch.no_grad()
def score_windows(model, inputs, targets, pad_id: int, topk=(1, 5), batch_size: int = 16) -> dict:
    """A teacher-forced pass over fixed windows, kept window by window so that runs can be compared pairwise.

    inputs (W, T), targets (W, >= T + H - 1) as from `validation_windows`. Returns numpy arrays of length W:
    nll (summed next-token loss in nats over the window's real targets), targets (how many real targets),
    top{k} (how many of them were among the model's k best guesses); for FutureFormers, per future chunk k:
    fs_cos_{k} (summed cosine between the chunk's prediction and its target) and fs_n_{k} (how many chunks the
    loss counts); and fs_loss_{k}, one number: the model's own future-sight loss averaged over those chunks.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    W, T = inputs.shape
    P, H, kmax = model.cfg.fs_periods, model.cfg.lookahead, max(topk)
    out = {"nll": np.zeros(W), "targets": np.zeros(W), **{f"top{k}": np.zeros(W) for k in topk}}
    fs_loss = np.zeros(P)
    for k in range(1, P + 1):
        out[f"fs_cos_{k}"], out[f"fs_n_{k}"] = np.zeros(W), np.zeros(W)
    try:
        for i in range(0, W, batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size, :T + H - 1].to(device)
            rows = slice(i, i + len(x))
            logits, _ = model(x, y)                                                 # (B, T, V)
            yt = y[:, :T]                                                           # (B, T)
            real = yt != pad_id
            nll = F.cross_entropy(logits.float().flatten(0, 1), yt.flatten(), ignore_index=pad_id,
                                  reduction="none").view_as(yt)                     # (B, T), 0 at pad
            out["nll"][rows] = nll.double().sum(1).cpu().numpy()
            out["targets"][rows] = real.sum(1).cpu().numpy()
            hits = logits.topk(kmax, dim=-1).indices == yt[..., None]               # (B, T, kmax)
            for k in topk:
                out[f"top{k}"][rows] = (hits[..., :k].any(-1) & real).sum(1).cpu().numpy()
            for k, (target, valid) in enumerate(future_targets(model, y, T) if P else [], start=1):
                cos = F.cosine_similarity(model.future[k].float(), target.float(), dim=-1).mean(-1)  # (B, T)
                out[f"fs_cos_{k}"][rows] = (cos * valid).sum(1).cpu().numpy()
                out[f"fs_n_{k}"][rows] = valid.sum(1).cpu().numpy()
                fs_loss[k - 1] += float(model.loss_parts[f"fs_loss_{k}"]) * float(valid.sum())  # a masked mean
    finally:
        model.train(was_training)
    for k in range(1, P + 1):
        n = out[f"fs_n_{k}"].sum()
        out[f"fs_loss_{k}"] = fs_loss[k - 1] / n if n else float("nan")
    return out


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class NoWeights:
    """A run committed without its model.pth: its config, and scores cached in its folder (see _cached_scores)."""

    def __init__(self, cfg):
        self.cfg = cfg


def _cached_scores(name, trained_dir, model, inputs, targets, pad_id, topk, batch_size) -> dict:
    """score_windows for a saved run, kept in <run>/scores/ (git-ignored unless committed with the run): one file
    per set of windows (a hash of their tokens, which fixes the validation text, tokenizer, window length and
    selection) and topk, holding the hash of the model.pth it scored. Scoring twenty runs again costs nothing;
    a retrained run (another model.pth) is scored afresh; and a run committed with its scores but without its
    weights (to keep a clone small) is compared from its scores alone (model: a NoWeights)."""
    run = tools.run_path(name, trained_dir)
    folder = os.path.join(run, "scores")
    key = hashlib.sha256(json.dumps([SCORES_VERSION, hashlib.sha256(inputs.numpy().tobytes()).hexdigest(),
                                     hashlib.sha256(targets.numpy().tobytes()).hexdigest(),
                                     list(topk)]).encode()).hexdigest()[:20]
    path = os.path.join(folder, f"{key}.npz")
    weights = os.path.join(run, "model.pth")
    current = _file_hash(weights) if os.path.isfile(weights) else None
    if os.path.isfile(path):
        try:
            with np.load(path) as f:
                scored = str(f["weights_sha256"]) if "weights_sha256" in f.files else ""
                cached = {k: f[k] if f[k].ndim else float(f[k]) for k in f.files if k != "weights_sha256"}
            if current is None or scored == current:
                return cached
        except (OSError, ValueError, EOFError):  # unreadable (e.g. cut short): score again and replace it
            pass
    if isinstance(model, NoWeights):
        raise FileNotFoundError(f"{name} has no model.pth and no scores for these windows in {folder}: compare it "
                                "on the windows it was scored on (its own validation text), or restore its weights")
    scores = score_windows(model, inputs, targets, pad_id, topk, batch_size)
    os.makedirs(folder, exist_ok=True)
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, weights_sha256=current, **scores)
    tools.replace_atomically(path, write)
    return scores


def _eval_data(name: str, trained_dir, mcfg, val_data_path: str | None):
    """The data a run is scored on: its own validation split, or the text file `val_data_path` (tokenized with
    the run's tokenizer; the file stands in for both splits, only its validation split is read)."""
    _, tcfg = tools.load_configs(name, trained_dir)
    if val_data_path is not None:
        tcfg = replace(tcfg, data_path=val_data_path, val_data_path=val_data_path)
    return tools.get_data(mcfg, tcfg)


def _entries(models, trained_dir, data, device, val_data_path=None):
    """[(label, model, data, run name or None)] for names, Model objects, or a dict label -> either."""
    if isinstance(models, (str, torch.nn.Module)):
        models = [models]
    items = list(models.items()) if isinstance(models, dict) else [
        (m if isinstance(m, str) else f"model_{i}", m) for i, m in enumerate(models)]
    if not items:
        raise ValueError("no models to evaluate")
    labels = [label for label, _ in items]
    if len(set(labels)) < len(labels):
        raise ValueError(f"models {labels} are named more than once: give each a label, e.g. a dict label -> model")
    if data is not None and val_data_path is not None:
        raise ValueError("pass data= or val_data_path=, not both")
    out = []
    for label, m in items:
        d, name = data, None
        if isinstance(m, str):
            name = m
            if os.path.isfile(os.path.join(tools.run_path(name, trained_dir), "model.pth")):
                m, _, mcfg = tools.load_model(name, trained_dir, device)
            else:  # committed without weights: its cached scores stand in for it (see _cached_scores)
                mcfg = tools.load_configs(name, trained_dir)[0]
                m = NoWeights(mcfg)
            if d is None:
                d = _eval_data(name, trained_dir, mcfg, val_data_path)
        elif d is None and val_data_path is not None:
            d = tools.get_data(m.cfg, TrainConfig(data_path=val_data_path, val_data_path=val_data_path))
        elif d is None:
            raise ValueError(f"{label}: a model given as an object needs data=tools.get_data(model_cfg, train_cfg) "
                             "or val_data_path= to evaluate on (a run given by name brings its own)")
        info = d.meta["tokenizer"]
        if (info["name"], info["vocab_len"]) != (m.cfg.tokenizer, m.cfg.vocab_len):
            raise ValueError(f"{label}: the model uses tokenizer {m.cfg.tokenizer} {m.cfg.vocab_len} but the data "
                             f"was tokenized with {info['name']} {info['vocab_len']}")
        out.append((label, m, d, name))
    return out


def window_scores(models, num_sequences: int | None = None, seq_len: int | None = None, topk=(1, 5),
                  trained_dir: str | None = None, data=None, batch_size: int = 16, split: str = "val",
                  device: str = "auto", val_data_path: str | None = None) -> tuple[dict, dict]:
    """({label: score_windows(...)}, {label: {"windows", "bytes_per_token", "data"}}): every model scored window
    by window on fixed windows of the validation split (see `evaluate` for the arguments). Runs given by name
    are cached in their folder (`_cached_scores`). Models that share a tokenizer, window length and validation
    text read exactly the same windows (equal "windows" fingerprints), so they can be compared pairwise."""
    topk = tuple(sorted(set(topk)))
    entries = _entries(models, trained_dir, data, device, val_data_path)
    if seq_len is None:
        seq_len = min(m.cfg.max_seq_len for _, m, _, _ in entries)
    scores, info, windows = {}, {}, {}
    for label, model, d, name in entries:
        if seq_len > model.cfg.max_seq_len:
            raise ValueError(f"seq_len={seq_len} is not allowed: {label} has max_seq_len={model.cfg.max_seq_len}")
        key = d.path or id(d)
        if key not in windows:  # one set of windows per data source, with the look-ahead of the longest-sighted
            lookahead = max(m.cfg.lookahead for _, m, d2, _ in entries if (d2.path or id(d2)) == key)
            windows[key] = validation_windows(d, seq_len, lookahead, num_sequences, split)
        inputs, targets = windows[key]
        targets = targets[:, :seq_len + model.cfg.lookahead - 1]  # what this model reads: cache keys stay its own
        if name is not None:
            scores[label] = _cached_scores(name, trained_dir, model, inputs, targets, d.pad_id, topk, batch_size)
        else:
            scores[label] = score_windows(model, inputs, targets, d.pad_id, topk, batch_size)
        info[label] = {"windows": _fingerprint(inputs), "bytes_per_token": d.meta[split]["bytes_per_token"],
                       "data": d}
    return scores, info


def evaluate(models, num_sequences: int | None = None, seq_len: int | None = None, topk=(1, 5),
             trained_dir: str | None = None, data=None, batch_size: int = 16, split: str = "val",
             device: str = "auto", val_data_path: str | None = None) -> pd.DataFrame:
    """Teacher-forced next-token evaluation on fixed validation windows; one row per model.

    models: run names, Model objects (then pass `data` or `val_data_path`), or a dict label -> either. Runs
        given by name are loaded onto `device` and evaluated on their own training data's validation split,
        or on the text file `val_data_path` (e.g. tools.VALID_SAMPLE_PATH, the official validation text).
    num_sequences: None (default) = every window of the split; a number keeps that many windows of seq_len
        tokens, evenly spaced over the split. seq_len: None = the shortest max_seq_len among the models, so all
        read the same windows.
    Every real (non-pad) next-token target weighs the same, whichever window or batch it is in.
    Columns: sequences, targets (real targets scored), ntp_loss (nats per token), bpb (bits per byte, from
    the split's bytes_per_token), ppl, top{k}_acc for each k of topk, and for FutureFormers, per future
    chunk k: fs_cos_k (mean cosine between the chunk's prediction and its target, over the chunks the loss
    counts) and fs_loss_k (the model's own future-sight loss); windows (a hash of the tokens read: equal
    hashes = the same windows). `window_scores` gives the same window by window; `compare` adds intervals.
    """
    topk = tuple(sorted(set(topk)))
    scores, info = window_scores(models, num_sequences, seq_len, topk, trained_dir, data, batch_size, split, device,
                                 val_data_path)
    rows = {}
    for label, s in scores.items():
        n = s["targets"].sum()
        loss = float(s["nll"].sum() / n)
        rows[label] = {"sequences": len(s["nll"]), "targets": int(n), "ntp_loss": loss,
                       "bpb": tools.bits_per_byte(loss, info[label]["bytes_per_token"]),
                       "ppl": math.exp(loss) if loss < 700 else math.inf,
                       **{f"top{k}_acc": float(s[f"top{k}"].sum() / n) for k in topk}}
        k = 1
        while f"fs_n_{k}" in s:
            m = s[f"fs_n_{k}"].sum()
            rows[label][f"fs_cos_{k}"] = float(s[f"fs_cos_{k}"].sum() / m) if m else float("nan")
            rows[label][f"fs_loss_{k}"] = float(s[f"fs_loss_{k}"])
            k += 1
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["windows"] = [info[label]["windows"] for label in scores]
    table.index.name = "model"
    return table


# ---------------------------------------------------------------- paired comparisons with intervals


def find_groups(names, trained_dir: str | None = None, groups: dict | None = None) -> dict:
    """{label: [run names]}: which runs are seeds of one configuration, in the order the runs are given.

    groups: explicit {label: [run, ...]} (a run may be in one group only). Runs not in it are grouped by the
    `group` their train_config.json records (train.py --seeds writes it), or else by a NAME_s<seed> name; a
    run with neither is a group of its own, labelled with its name."""
    names = resolve_names(names, trained_dir)
    explicit = {label: list(members) for label, members in (groups or {}).items()}
    owner = {}
    for label, members in explicit.items():
        if not members:
            raise ValueError(f"group {label!r} has no runs")
        for name in members:
            if name in owner:
                raise ValueError(f"run {name!r} is in groups {owner[name]!r} and {label!r}: give it one")
            if name not in names:
                names.append(name)
            owner[name] = label
    out = {}
    for name in names:
        label = owner.get(name)
        if label is None:
            recorded = tools.load_configs(name, trained_dir)[1].group
            m = SEED_SUFFIX.match(os.path.basename(os.path.normpath(name)))
            label = recorded or (m.group("group") if m else name)
            if label in explicit or (label in names and label != name):
                label = name  # a recorded label that clashes with a run's or an explicit group's name
        out.setdefault(label, []).append(name)
    return out


def _verdict(r: dict) -> str:
    """better / worse when the interval excludes 0, else "not resolved". Over windows only (two single runs) the
    verdict says so: it is a statement about this evaluation text, and another seed may reverse it."""
    if r["lo"] <= 0 <= r["hi"]:
        return "not resolved"
    word = "better" if r["hi"] < 0 else "worse"
    return f"{word} (windows only)" if r["covers"] == "windows only" else word


def compare(names=None, reference: str | None = None, groups: dict | None = None, trained_dir: str | None = None,
            val_data_path: str | None = None, seq_len: int | None = None, batch_size: int = 16,
            device: str = "auto", level: float = stats.LEVEL, n_boot: int = stats.N_BOOT,
            seed: int = 0, paired: bool = False) -> pd.DataFrame:
    """Each run (or group of seeds) against a reference, on the same windows of the whole validation split,
    with a 95% interval for the difference. One row per group (`find_groups`; a run alone is a group of one).

    reference: a group label or a run name (its group is used); None = the first group.
    val_data_path: score on this text file instead of each run's own validation split (they must all read
        the same windows); tools.VALID_SAMPLE_PATH is the official validation text.
    Columns: runs (seeds in the group: runs that share a seed count once, averaged window by window, and a
    note says so), ntp_loss and bpb (the group's mean over seeds), seed_sd_pct (standard
    deviation over seeds, % of the mean; '-' for one run), d_ntp, d_bpb (B - reference; negative = better),
    d_pct and lo_pct .. hi_pct (the same in % of the reference, with its interval), verdict (better / worse
    when the interval excludes 0, "better (windows only)" / "worse (windows only)" when it does so over the
    windows alone, else "not resolved"), covers: what the interval accounts for —
      "windows only": two single runs (`stats.paired_bootstrap`): another seed of either may differ more;
      "windows and seeds": `stats.group_interval`, with the seed spread measured in the two groups;
      "windows and seeds, paired": with paired=True, `stats.seed_paired_interval`: seed k of each group is
      paired with seed k of the reference (the seed in its train_config.json; every group needs the
      reference's seeds), and the spread is that of the pairs' differences. Pair when the pairs
      share something a seed decides (one training scored with averaged and last weights, or the same seed's
      data order and initial weights), and decide so before looking: not by which interval is narrower.
    table.attrs["notes"] holds sentences that size the experiment: the smallest difference these seeds can
    resolve, and how many seeds a 1% difference would need at the measured spread.
    """
    groups = find_groups(names, trained_dir, groups)
    runs = [n for members in groups.values() for n in members]
    scores, info = window_scores(runs, None, seq_len, (1, 5), trained_dir, None, batch_size, "val", device,
                                 val_data_path)
    prints = {info[n]["windows"] for n in runs}
    if len(prints) > 1:
        raise ValueError("the runs were not scored on the same windows (their tokenizers, window lengths or "
                         "validation texts differ), so they cannot be compared window by window; pass "
                         "val_data_path= (e.g. tools.VALID_SAMPLE_PATH) to score all on one text")
    if reference is None:
        ref = next(iter(groups))
    elif reference in groups:
        ref = reference
    else:
        ref = next((label for label, members in groups.items() if reference in members), None)
        if ref is None:
            raise ValueError(f"reference={reference!r} is not one of the runs or groups compared: {list(groups)}")
    counts = scores[runs[0]]["targets"]
    bpt = info[runs[0]]["bytes_per_token"]
    total = counts.sum()
    rows, notes, sizing = {}, [], {}
    nll, seeds = {}, {}
    for label, members in groups.items():
        nll[label], seeds[label], shared = _seed_units(members, scores, trained_dir)
        if shared:
            notes.append(f"{label}: the runs in {', '.join(shared)} share a seed, so each seed's runs are averaged "
                         f"into one before the seed spread is measured: {len(seeds[label])} seeds, not "
                         f"{len(members)} runs")
    for label in groups:
        per_seed = nll[label].sum(1) / total
        mean = float(per_seed.mean())
        row = {"runs": len(seeds[label]), "ntp_loss": mean, "bpb": tools.bits_per_byte(mean, bpt),
               "seed_sd_pct": 100 * per_seed.std(ddof=1) / mean if len(per_seed) > 1 else float("nan")}
        if label == ref:
            row.update(verdict="reference", covers="")
        else:
            if len(seeds[label]) == 1 and len(seeds[ref]) == 1:
                r = stats.paired_bootstrap(nll[ref][0], nll[label][0], counts, level, n_boot, seed)
                r["covers"] = "windows only"
            elif paired:
                ia, ib = _seed_pairs(seeds, ref, label)
                r = stats.seed_paired_interval(nll[ref][ia], nll[label][ib], counts, level, n_boot, seed)
                sizing.setdefault(_sizing_note(r, level), []).append(label)
            else:
                r = stats.group_interval(nll[ref], nll[label], counts, level, n_boot, seed)
                sizing.setdefault(_sizing_note(r, level), []).append(label)
            row.update(d_ntp=r["diff"], d_bpb=tools.bits_per_byte(r["diff"], bpt), d_pct=100 * r["rel"],
                       lo_pct=100 * r["rel_lo"], hi_pct=100 * r["rel_hi"], verdict=_verdict(r), covers=r["covers"])
        rows[label] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    notes += [f"{', '.join(labels)} vs {ref}: {note}" for note, labels in sizing.items()]
    if any(table["covers"] == "windows only"):
        notes.insert(0, "'windows only': both sides are single runs, so the interval covers the choice of evaluation "
                        "text, not seed noise; another seed of either run may differ by more. Train seeds "
                        "(train.py --seeds=0,1,2) to compare groups.")
    table.attrs.update(reference=ref, groups=groups, notes=notes, windows=len(counts), targets=int(total),
                       level=level)
    return table


def _seed_units(members: list[str], scores: dict, trained_dir) -> tuple[np.ndarray, list[int], list[str]]:
    """(per-window losses, one row per seed; the seeds; the sets of runs that shared a seed). The seed is the
    unit of replication: runs of one seed (trained again, on another machine, or one training scored two
    ways) are not independent draws, so they are averaged window by window into one row."""
    recorded = [tools.load_configs(name, trained_dir)[1].seed for name in members]
    stack = np.stack([scores[name]["nll"] for name in members])
    if len(set(recorded)) == len(recorded):
        return stack, recorded, []
    units = sorted(set(recorded), key=recorded.index)
    rows = [[i for i, k in enumerate(recorded) if k == seed] for seed in units]
    shared = [f"({', '.join(members[i] for i in idx)})" for idx in rows if len(idx) > 1]
    return np.stack([stack[idx].mean(0) for idx in rows]), units, shared


def _seed_pairs(seeds: dict, ref: str, label: str) -> tuple[list[int], list[int]]:
    """Row indices into the reference's and the label's seed rows that pair seed k with seed k, in seed order."""
    if sorted(seeds[ref]) != sorted(seeds[label]):
        raise ValueError(f"paired comparison: {label!r} has seeds {sorted(seeds[label])} and the reference {ref!r} "
                         f"{sorted(seeds[ref])}; pairing needs the same seeds in both (or compare without pairing)")
    order = sorted(seeds[ref])
    return [seeds[ref].index(k) for k in order], [seeds[label].index(k) for k in order]


def _sizing_note(r: dict, level: float) -> str:
    """What a group comparison can resolve at the measured seed spread, and the seeds a 1% difference needs."""
    if r["seed_df"] == 0:
        return "one run each, no seed spread measured: the interval covers the windows only."
    sd = r["seed_sd"] / r["mean_a"]
    window = r["window_se_rel"]
    if r.get("paired"):
        smallest = stats.resolvable(sd, r["n_a"], r["n_b"], window, level, paired=True)
        need = stats.seeds_needed(0.01, sd, window, level, paired=True)
        return (f"{r['n_a']} seed pairs, spread of the pairs' differences {100 * sd:.2f}% ({r['seed_df']} degree(s) "
                f"of freedom): differences within ±{100 * smallest:.2f}% cannot be told from 0; a 1% difference "
                f"needs {need or 'more than 1000'} pairs (80% power).")
    smallest = stats.resolvable(sd, r["n_a"], r["n_b"], window, level)
    need = stats.seeds_needed(0.01, sd, window, level)
    return (f"{r['n_b']} seed(s) against {r['n_a']}, seed spread {100 * sd:.2f}% (pooled, {r['seed_df']} degree(s) "
            f"of freedom): differences within ±{100 * smallest:.2f}% cannot be told from 0; a 1% difference "
            f"needs {need or 'more than 1000'} seeds per group (80% power).")


def plot_comparison(table: pd.DataFrame, path: str | None = None, ax=None):
    """compare()'s table as a picture: each row's difference from the reference in %, with its interval as a
    bar (thick: over windows and seeds; thin: over windows only, seed noise not in it), green where the verdict is
    better, red where worse, grey where not resolved. Returns the Figure."""
    rows = table[table["verdict"] != "reference"].iloc[::-1]
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 0.45 * len(rows) + 1.4))
    for y, (_, r) in enumerate(rows.iterrows()):
        seeds = r["covers"].startswith("windows and seeds")
        color = {"better": "tab:green", "worse": "tab:red"}.get(r["verdict"].split()[0], "tab:gray")
        ax.plot([r["lo_pct"], r["hi_pct"]], [y, y], "-", color=color, lw=6 if seeds else 2.5,
                alpha=0.45 if seeds else 0.9, solid_capstyle="butt")
        ax.plot(r["d_pct"], y, "o", color=color)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(rows)), [f"{label} ({int(r['runs'])})" for label, r in rows.iterrows()])
    level = round(100 * table.attrs.get("level", stats.LEVEL))
    ax.set_xlabel(f"bits per byte, % difference from {table.attrs.get('reference')} ({level}% interval)")
    ax.set_title("thick bar: interval over windows and seeds; thin: over windows only (seed noise left out)",
                 fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig = ax.figure
    fig.tight_layout()
    if path:
        save_plot(fig, path)
    return fig


def format_comparison(table: pd.DataFrame, markdown: bool = False) -> str:
    """compare()'s table as text: differences in % with their interval, then the notes."""
    shown = pd.DataFrame(index=table.index)
    shown["runs"] = table["runs"].map(int)
    shown["ntp_loss"] = table["ntp_loss"].map(lambda v: f"{v:.4f}")
    shown["bpb"] = table["bpb"].map(lambda v: f"{v:.4f}")
    shown["seed sd"] = table["seed_sd_pct"].map(lambda v: "-" if pd.isna(v) else f"{v:.2f}%")
    get = lambda col: table[col] if col in table.columns else pd.Series(np.nan, index=table.index)
    shown["Δ bpb"] = get("d_bpb").map(lambda v: "-" if pd.isna(v) else f"{v:+.4f}")
    shown["Δ %"] = get("d_pct").map(lambda v: "-" if pd.isna(v) else f"{v:+.2f}%")
    level = round(100 * table.attrs.get("level", stats.LEVEL))
    shown[f"{level}% interval"] = [
        "-" if pd.isna(lo) else f"{lo:+.2f}% … {hi:+.2f}%" for lo, hi in zip(get("lo_pct"), get("hi_pct"))]
    shown["verdict"] = table["verdict"]
    shown["covers"] = table["covers"]
    if markdown:
        head = ["model", *shown.columns]
        rows = [[f"`{i}`", *map(str, r)] for i, r in zip(shown.index, shown.itertuples(index=False))]
        rule = ["---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---", "---"]
        text = "\n".join("| " + " | ".join(cells) + " |" for cells in [head, rule, *rows])
    else:
        text = shown.to_string()
    a = table.attrs
    groups = {k: v for k, v in a.get("groups", {}).items() if len(v) > 1}
    lines = [f"vs {a.get('reference')}, on {a.get('windows')} windows ({a.get('targets', 0):,} targets); Δ < 0: better"
             + ("; groups: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in groups.items()) if groups else "")]
    lines += [f"- {note}" for note in a.get("notes", [])]
    return text + "\n" + "\n".join(lines)


# ---------------------------------------------------------------- along training: the checkpoints


def checkpoint_scores(names, trained_dir: str | None = None, val_data_path: str | None = None, batch_size: int = 16,
                      device: str = "auto") -> pd.DataFrame:
    """Each run's checkpoints and final weights scored on every window of the validation split: where along
    training a run validates best. The logged curves are estimates on a few batches; this is the whole split.

    names: runs trained with --checkpoint_interval=N (their checkpoints/step_*.pt). A run trained with
    ema_decay keeps its moving average in each checkpoint, so each step gives two rows: "last" (the training
    weights) and "average". The final row is the run's model.pth: the average for an averaged run (its last
    weights are the twin run NAME_last, with ema_save_last). val_data_path: as in `evaluate`, e.g.
    tools.VALID_SAMPLE_PATH, the official validation text.
    Columns: run, step, weights ("last" or "average"), ntp_loss, bpb; sorted by run, weights and step.
    """
    from train import checkpoint_files, load_checkpoint

    rows = []
    for name in [names] if isinstance(names, str) else names:
        path = tools.run_path(name, trained_dir)
        mcfg, tcfg = tools.load_configs(name, trained_dir)
        files = checkpoint_files(path)
        if not files:
            raise ValueError(f"{path} has no checkpoints to score: train it with --checkpoint_interval=N (each "
                             "checkpoint keeps the weights of its step, and the moving average with --ema_decay)")
        models, where = {}, tools.pick_device(device)
        for file in files:
            ckpt = load_checkpoint(file)
            for kind, state in (("last", ckpt["model"]), ("average", ckpt.get("ema", {}).get("weights"))):
                if state is not None:
                    model = Model(mcfg)
                    model.load_state_dict(state)
                    models[(ckpt["step"], kind)] = model.to(where).eval()
        if os.path.isfile(os.path.join(path, "model.pth")):
            step = int(pd.read_csv(os.path.join(path, "log_data.csv"))["step"].iloc[-1])
            models[(step, "average" if tcfg.ema_decay else "last")] = tools.load_model(name, trained_dir, device)[0]
        data = _eval_data(name, trained_dir, mcfg, val_data_path)
        labels = {key: f"{name}@{key[0]}:{key[1]}" for key in models}
        ev = evaluate({labels[key]: m for key, m in models.items()}, data=data, batch_size=batch_size, topk=(1,))
        rows += [{"run": name, "step": step, "weights": kind, "ntp_loss": float(ev.loc[labels[step, kind], "ntp_loss"]),
                  "bpb": float(ev.loc[labels[step, kind], "bpb"])} for step, kind in models]
    table = pd.DataFrame(rows).sort_values(["run", "weights", "step"], kind="stable").reset_index(drop=True)
    return table


def plot_checkpoint_scores(table: pd.DataFrame, path: str | None = None, metric: str = "bpb"):
    """checkpoint_scores' table as curves: one line per run and kind of weights (solid: average, dashed: last),
    with the best step of each marked. Returns the Figure."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for (run, kind), rows in table.groupby(["run", "weights"], sort=False):
        color = f"C{sorted(table['run'].unique()).index(run) % 10}"
        ax.plot(rows["step"], rows[metric], "-" if kind == "average" else "--", marker="o", ms=3, color=color,
                label=f"{run} ({kind})")
        best = rows.loc[rows[metric].idxmin()]
        ax.plot(best["step"], best[metric], "*", ms=11, color=color)
    ax.set_xlabel("step")
    ax.set_ylabel(f"validation {metric}, whole split")
    ax.set_title("each checkpoint scored on every validation window; star: the best step", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    if path:
        save_plot(fig, path)
    return fig


# ---------------------------------------------------------------- the summary table


def _log_summary(name: str, trained_dir) -> dict:
    """Training facts from the run's log: steps, tokens, wall time, throughput, final validation NTP loss."""
    try:
        log = tools.read_log(name, trained_dir)
    except FileNotFoundError:
        return {}
    if log.empty:
        return {}
    last = log.iloc[-1]
    full = log[log["full_val"] == 1] if "full_val" in log.columns else log.iloc[:0]
    final = full.iloc[-1] if len(full) else last
    get = lambda row, col: float(row[col]) if col in row.index else float("nan")
    return {"steps": int(last["step"]) if "step" in log.columns else np.nan,
            "tokens": int(last["tokens"]) if "tokens" in log.columns else np.nan,
            **({"flops": float(last["flops"])} if "flops" in log.columns else {}),
            "wall_s": get(last, "elapsed_s"),
            "tokens_per_s": get(last, "tokens_per_s"),  # train.py logs the throughput so far: the last is the run's
            "val_ntp_loss": get(final, "val_ntp_loss"), "val_bpb": get(final, "val_bpb"),
            "val_from": "full" if len(full) else "last"}


def summary_table(names=None, trained_dir: str | None = None, num_sequences: int | None = None,
                  seq_len: int | None = None, topk=(1, 5), batch_size: int = 16, device: str = "auto",
                  val_data_path: str | None = None) -> pd.DataFrame:
    """One row per run: what it is, what training cost, and how well it predicts the next token.

    fs_periods (0 = baseline), params (model.num_params()), steps, tokens (training tokens seen), flops
    (training FLOPs, modules/flops.py), wall_s, tokens_per_s (training throughput, the log's last row) — from
    the configs and log_data.csv; val_ntp_loss, val_bpb: the log's final full-validation row (val_from =
    "full"), or its last row ("last"); then `evaluate`'s teacher-forced eval_ntp_loss, eval_bpb, top{k}_acc,
    fs_cos_k on every window of the validation split (or num_sequences of them; 0 skips it), the run's own or
    the text `val_data_path`. Compare on the NTP loss and bits per byte columns; `compare` gives intervals.
    print(format_table(table)) prints it neatly.
    """
    names = resolve_names(names, trained_dir)
    rows = {}
    for name in names:
        mcfg, _ = tools.load_configs(name, trained_dir)
        params = sum(p.numel() for p in Model(mcfg).parameters())  # from the config: runs without weights too
        rows[name] = {"fs_periods": mcfg.fs_periods, "params": params, **_log_summary(name, trained_dir)}
        if "tokens" in rows[name] and "flops" not in rows[name]:
            rows[name]["flops"] = rows[name]["tokens"] * flops_per_token(mcfg)
    table = pd.DataFrame.from_dict(rows, orient="index")
    front = [c for c in ("fs_periods", "params", "steps", "tokens", "flops") if c in table.columns]
    table = table[front + [c for c in table.columns if c not in front]]
    if num_sequences != 0:
        ev = evaluate(names, num_sequences, seq_len, topk, trained_dir, batch_size=batch_size, device=device,
                      val_data_path=val_data_path)
        ev = ev[["ntp_loss", "bpb"] + [c for c in ev.columns if c.endswith("_acc") or c.startswith("fs_cos_")]
                + ["sequences"]]
        ev = ev.rename(columns={"ntp_loss": "eval_ntp_loss", "bpb": "eval_bpb", "sequences": "eval_sequences"})
        table = table.join(ev)
    table.index.name = "model"
    return table.loc[names]


TABLE_COLUMNS = ("params", "tokens", "tokens_per_s", "val_bpb", "eval_bpb", "top1_acc", "top5_acc")  # the default


def format_table(table: pd.DataFrame, markdown: bool = False, columns=None) -> str:
    """The table as text: counts with thousands separators, losses and rates to 4 decimals, NaN as '-'.
    markdown=True writes a GitHub markdown table (numbers right-aligned), ready to paste into a README.
    columns: show only these columns, in this order (an unknown one is a ValueError naming the known ones);
    "default" = those of TABLE_COLUMNS the table has (a table that fits a terminal); None = all."""
    def fmt(col):
        if col in ("params", "steps", "tokens", "eval_sequences", "sequences", "targets", "fs_periods"):
            return lambda v: "-" if pd.isna(v) else f"{int(v):,}"
        if col in ("wall_s", "tokens_per_s"):
            return lambda v: "-" if pd.isna(v) else f"{v:,.0f}"
        if col == "flops":
            return lambda v: "-" if pd.isna(v) else f"{v:.2e}"
        return lambda v: "-" if isinstance(v, float) and math.isnan(v) else (
            f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v))
    if columns == "default":
        columns = [c for c in TABLE_COLUMNS if c in table.columns]
    if columns is not None:
        columns = [columns] if isinstance(columns, str) else list(columns)
        unknown = [c for c in columns if c not in table.columns]
        if unknown:
            raise ValueError(f"no column {unknown} in the table; its columns: {list(table.columns)}")
        table = table[columns]
    shown = table.copy()
    for col in shown.columns:
        shown[col] = shown[col].map(fmt(col))
    if not markdown:
        return shown.to_string()
    numeric = [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    head = [str(table.index.name or "")] + [str(c) for c in shown.columns]
    rule = ["---"] + ["---:" if num else "---" for num in numeric]
    rows = [[str(i)] + [str(v) for v in row] for i, row in zip(shown.index, shown.itertuples(index=False))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [head, rule, *rows])


# ---------------------------------------------------------------- text from each run


def compare_samples(names=None, prompt: str = "Once upon a time", max_gen_len: int = 60, temperature: float = 0.0,
                    seed: int = 0, trained_dir: str | None = None, device: str = "auto", **sampling) -> dict:
    """{run: the prompt and its continuation} for each run, from the same prompt: greedy by default
    (temperature=0, the same text every time); with a temperature, each run samples from a generator
    seeded with `seed`. `sampling`: top_k, top_p, min_p, as in inference.generate."""
    from inference import generate

    out = {}
    for name in resolve_names(names, trained_dir):
        model, tok, _ = tools.load_model(name, trained_dir, device)
        gen = torch.Generator().manual_seed(seed)
        out[name] = generate(prompt, model, tok, max_gen_len=max_gen_len, temperature=temperature, generator=gen,
                             **sampling)
    return out


# ---------------------------------------------------------------- per-position predictions


@torch.no_grad()
def show_predictions(model, tokenizer=None, text: str | None = None, topk: int = 5, trained_dir: str | None = None,
                     data=None, index: int = 0, max_positions: int | None = None, device: str = "auto",
                     file=None) -> pd.DataFrame:
    """Print, for each position of a text, the true next token next to the model's top-k guesses.

    model: a run name (its tokenizer and data come with it) or a Model (then pass `tokenizer`, and `data`
    when no text is given). text: encoded with bos and cut to max_seq_len + 1 tokens; None = validation
    window `index` (the windows of `evaluate`, max_seq_len long). max_positions: print only the first ones.
    A '*' marks the true token among the guesses; rank is its place in the top k ('-' = not there).
    Returns one row per position: pos, input, target, rank (0 = not in the top k), p_target, predictions
    ([(piece, probability)] best first).
    """
    label = model if isinstance(model, str) else f"{type(model).__name__}(fs_periods={model.cfg.fs_periods})"
    if isinstance(model, str):
        name, (model, tokenizer, mcfg) = model, tools.load_model(model, trained_dir, device)
        if text is None and data is None:
            data = tools.get_data(mcfg, tools.load_configs(name, trained_dir)[1])
    elif tokenizer is None:
        raise ValueError("a model given as an object needs its tokenizer (tools.load_model returns both)")
    T = model.cfg.max_seq_len
    if text is not None:
        ids = torch.tensor(tokenizer.encode(text, bos=True, eos=False)[:T + 1])
        source = repr(text if len(text) <= 60 else text[:57] + "...")
    elif data is None:
        raise ValueError("no text and no data: pass text=... or data=tools.get_data(model_cfg, train_cfg)")
    else:
        window = next(itertools.islice(tools.eval_batches(data, "val", 1, T), index, None), None)
        if window is None:
            raise ValueError(f"index={index} is not allowed: the validation split has "
                             f"{len(range(0, len(data.val) - 1, T))} windows of {T} tokens")
        x, y = window
        ids = torch.cat([x[0, :1], y[0]])
        ids = ids[:int((ids != data.pad_id).sum())]  # the last window of the split is padded
        source = f"validation window {index}"
    if len(ids) < 2:
        raise ValueError(f"{source} has {len(ids)} token(s) with bos: need at least 2 to predict a next token")
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(ids[None, :-1].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
    logp = logits[0].float().log_softmax(-1).cpu()                                 # (T, V)
    top_p, top_i = logp.exp().topk(topk, dim=-1)                                   # (T, k)
    targets = ids[1:]
    rows = []
    for t, target in enumerate(targets.tolist()):
        guesses = top_i[t].tolist()
        rows.append({"pos": t, "input": tokenizer.expand_token(int(ids[t])), "target": tokenizer.expand_token(target),
                     "rank": guesses.index(target) + 1 if target in guesses else 0,
                     "p_target": float(logp[t, target].exp()),
                     "predictions": [(tokenizer.expand_token(i), p) for i, p in zip(guesses, top_p[t].tolist())]})
    table = pd.DataFrame(rows)
    shown = rows if max_positions is None else rows[:max_positions]
    w_in = max([len(repr(r["input"])) for r in shown] + [5])
    w_tg = max([len(repr(r["target"])) for r in shown] + [9])
    print(f"{label} on {source}: the true next token and the top-{topk} guesses (* = the true one)", file=file)
    print(f"{'pos':>4}  {'input':<{w_in}}  {'true next':<{w_tg}}  rank  p(true)  top-{topk}", file=file)
    for r in shown:
        guesses = "  ".join(f"{'*' if i + 1 == r['rank'] else ' '}{piece!r} {p:.2f}"
                            for i, (piece, p) in enumerate(r["predictions"]))
        print(f"{r['pos']:>4}  {r['input']!r:<{w_in}}  {r['target']!r:<{w_tg}}  {r['rank'] or '-':>4}  "
              f"{r['p_target']:7.3f}  {guesses}", file=file)
    if len(shown) < len(rows):
        print(f"  ... {len(rows) - len(shown)} more positions", file=file)
    n, loss = len(rows), -float(logp[torch.arange(len(targets)), targets].mean())
    print(f"top-1 {int((table['rank'] == 1).sum())}/{n}, top-{topk} {int((table['rank'] > 0).sum())}/{n}, "
          f"NTP loss {loss:.3f} nats/token over these {n} positions", file=file)
    return table


# ---------------------------------------------------------------- command line


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare trained runs: print a summary table (teacher-forced accuracy, NTP loss, bits per "
                    "byte) and write their loss curves as a PNG. Compare on NTP loss and bits per byte, never on "
                    "the total loss.")
    parser.add_argument("names", nargs="*", help="runs in trained_dir (or run folders); none = all runs there")
    parser.add_argument("--trained_dir", default=None, help="folder of run folders (default: trained/)")
    parser.add_argument("--x", default="tokens", choices=list(X_AXES), help="x axis of the curves")
    parser.add_argument("--metrics", default="val_ntp_loss,val_bpb",
                        help="comma-separated log columns, one subplot each (default: val_ntp_loss,val_bpb)")
    parser.add_argument("--splits", default=None, help="e.g. train,val: draw each metric in these splits")
    parser.add_argument("--log_x", action="store_true", help="logarithmic x axis")
    parser.add_argument("--log_y", action="store_true", help="logarithmic y axis")
    parser.add_argument("--trim", type=float, default=0,
                        help="drop the first fraction (< 1) or the first N rows (>= 1) of every curve")
    parser.add_argument("--out", default=None,
                        help="where to write the plot (default: model_comparison.png in trained_dir)")
    parser.add_argument("--num_sequences", type=int, default=-1,
                        help="validation windows for the table's teacher-forced evaluation; 0 = skip it, "
                             "-1 = all (default)")
    parser.add_argument("--val_data_path", default=None,
                        help="score every run on this text file instead of its own validation split, e.g. "
                             "../shared/data/tinystories_valid_sample.txt (the official validation text)")
    parser.add_argument("--reference", default=None,
                        help="compare every run or group with this one, window by window, with 95%% intervals "
                             "(default: the first given)")
    parser.add_argument("--group", action="append", default=[], metavar="LABEL=RUN,RUN,...",
                        help="these runs are seeds of one configuration (repeatable); runs trained with "
                             "--seeds, or named NAME_s<seed>, are grouped without it")
    parser.add_argument("--paired", action="store_true",
                        help="pair seed k of every group with seed k of the reference's (e.g. a run's averaged "
                             "and last weights); the interval then rests on the pairs' differences")
    parser.add_argument("--no_compare", action="store_true", help="skip the paired comparison")
    parser.add_argument("--checkpoints", action="store_true",
                        help="instead: score every checkpoint of each run (last and averaged weights) on the whole "
                             "validation split, print them and draw them to --out")
    parser.add_argument("--compare_out", default=None, help="also draw the paired comparison's intervals to this PNG")
    parser.add_argument("--seq_len", type=int, default=None, help="window length (default: shortest max_seq_len)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--columns", default="default",
                        help="comma-separated table columns to print, in this order; all = every column "
                             f"(default: {','.join(TABLE_COLUMNS)})")
    parser.add_argument("--markdown", action="store_true", help="print the table as a markdown table")
    parser.add_argument("--prompt", default=None,
                        help="also print each run's greedy continuation of this prompt (--max_len tokens)")
    parser.add_argument("--max_len", type=int, default=60, help="tokens to generate for --prompt")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")  # the command line only writes files
    try:
        names = resolve_names(args.names, args.trained_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    trim = int(args.trim) if args.trim >= 1 else args.trim
    out = args.out or os.path.join(args.trained_dir or tools.TRAINED_DIR, "model_comparison.png")
    try:
        check_plot_path(out, any_png=args.out is None)  # the default file is this command's own
        if args.compare_out:
            check_plot_path(args.compare_out)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    groups = {}
    for spec in args.group:
        label, eq, members = spec.partition("=")
        if not eq or not label or not members.strip(","):
            print(f"error: --group={spec!r} is not allowed: write --group=LABEL=RUN,RUN,...", file=sys.stderr)
            return 2
        groups[label] = [m for m in members.split(",") if m]
    if args.checkpoints:
        try:
            table = checkpoint_scores(names, args.trained_dir, args.val_data_path, args.batch_size, args.device)
            fig = plot_checkpoint_scores(table, out)
        except (FileNotFoundError, tools.DataSourceError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        plt.close(fig)
        shown = table.assign(ntp_loss=table["ntp_loss"].map("{:.4f}".format), bpb=table["bpb"].map("{:.4f}".format))
        if args.markdown:
            lines = [list(shown.columns), ["---", "---:", "---", "---:", "---:"], *shown.astype(str).values.tolist()]
            print("\n".join("| " + " | ".join(cells) + " |" for cells in lines))
        else:
            print(shown.to_string(index=False))
        print(f"\ncheckpoint curves written to {os.path.abspath(out)}")
        return 0
    try:
        table = summary_table(names, args.trained_dir, None if args.num_sequences < 0 else args.num_sequences,
                              args.seq_len, batch_size=args.batch_size, device=args.device,
                              val_data_path=args.val_data_path)
        columns = {"default": "default", "all": None}.get(args.columns, args.columns.split(","))
        print(format_table(table, markdown=args.markdown, columns=columns))
        if not args.no_compare and (len(names) > 1 or groups):
            cmp = compare(names, args.reference, groups, args.trained_dir, args.val_data_path, args.seq_len,
                          args.batch_size, args.device, paired=args.paired)
            text = f" of {args.val_data_path}" if args.val_data_path else ""
            print(f"\npaired comparison, every window of the validation split{text}:")
            print(format_comparison(cmp, markdown=args.markdown))
            if args.compare_out:
                plt.close(plot_comparison(cmp, args.compare_out))
                print(f"intervals drawn to {os.path.abspath(args.compare_out)}")
        fig = plot_curves(names, args.metrics.split(","), x=args.x, log_x=args.log_x, log_y=args.log_y, trim=trim,
                          splits=args.splits.split(",") if args.splits else None, trained_dir=args.trained_dir,
                          groups=groups)
        save_plot(fig, out, any_png=args.out is None)
    except (FileNotFoundError, tools.DataSourceError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    plt.close(fig)
    print(f"\nloss curves written to {os.path.abspath(out)}")
    if args.prompt is not None:
        try:
            samples = compare_samples(names, args.prompt, args.max_len, trained_dir=args.trained_dir,
                                      device=args.device)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for name, text in samples.items():
            print(f"\n{name} (greedy):\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
