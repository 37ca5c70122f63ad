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
import math
import os
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

import tools  # noqa: E402
from modules.loss import chunk_valid, chunk_windows  # noqa: E402

X_AXES = {"tokens": "training tokens", "step": "step", "elapsed_s": "wall time (s)"}
SPLIT_STYLES = {"train": "--", "val": "-"}  # train dashed, val solid
DEFAULT_NUM_SEQUENCES = 512


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


def plot_curves(names=None, metrics=("val_ntp_loss", "val_bpb"), x: str = "tokens", log_x: bool = False,
                log_y: bool = False, trim=0, splits=None, trained_dir: str | None = None, path: str | None = None):
    """Training curves of several runs from their log_data.csv: one subplot per metric, one line per run.

    metrics: log columns, e.g. "val_ntp_loss", "val_bpb", "train_ntp_loss", "lr", "grad_norm",
        "val_fs_target_cos_1"; a name without its split ("ntp_loss") draws both splits.
    splits: e.g. ("train", "val") draws each metric in those splits, train dashed and val solid (any split
        prefix of the metric is replaced); None = the metrics as given.
    x: "tokens" (training tokens seen; fair across batch sizes and context lengths), "step" or "elapsed_s".
    log_x, log_y: logarithmic axes (rows at x <= 0 are left out of a log x axis).
    trim: drop the first fraction (0 <= trim < 1) or the first N rows (an int) of every curve, to zoom in
        past the steep start.
    path: also save the figure there as a PNG.
    The final row of a log (full_val = 1) holds val_* over the whole validation split, not a sample of
    batches: it is drawn with a dot. Returns the matplotlib Figure.
    """
    if x not in X_AXES:
        raise ValueError(f"x={x!r} is not allowed: choose one of {list(X_AXES)}")
    if isinstance(metrics, str):
        metrics = [metrics]
    names = resolve_names(names, trained_dir)
    logs = {}
    for name in names:
        try:
            logs[name] = tools.read_log(name, trained_dir)
        except FileNotFoundError as e:
            warnings.warn(f"{name}: {e}; left out of the plot", stacklevel=2)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4.2), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes[0], metrics):
        for i, (name, log) in enumerate(logs.items()):
            if x not in log.columns:
                raise ValueError(f"{name}: log_data.csv has no column {x!r}; columns: {list(log.columns)}")
            log = _trimmed(log.sort_values(x, kind="stable"), trim)
            if log_x:
                log = log[log[x] > 0]
            for col in _columns(metric, splits, log.columns):
                if col not in log.columns:
                    if _split_of(col) is None or not col.split("_", 1)[1].startswith("fs_"):
                        raise ValueError(f"{name}: log_data.csv has no column {col!r}; columns: {list(log.columns)}")
                    continue  # a baseline has no future-sight columns
                split = _split_of(col)
                ax.plot(log[x], log[col], SPLIT_STYLES.get(split, "-"), color=colors[i % len(colors)],
                        label=f"{name} ({split})" if splits or split == "train" else name)
                full = log[log["full_val"] == 1] if "full_val" in log.columns and split == "val" else log.iloc[:0]
                ax.plot(full[x], full[col], "o", color=colors[i % len(colors)], markersize=4)
        split = _split_of(metric)
        ax.set_title(metric[len(split) + 1:] if splits and split else metric)
        ax.set_xlabel(X_AXES[x])
        ax.set_xscale("log" if log_x else "linear")
        ax.set_yscale("log" if log_y else "linear")
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
    fig.suptitle("dashed: train, solid: val; dot: whole validation split" if splits else
                 "dot: whole validation split (final row of each log)", fontsize=9)
    fig.tight_layout()
    if path:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=110, format="png")
    return fig


# ---------------------------------------------------------------- teacher-forced evaluation


def validation_windows(data, seq_len: int, lookahead: int = 1, num_sequences: int | None = DEFAULT_NUM_SEQUENCES,
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
    with tied weights that is the direction whose logits favour exactly the bag's tokens."""
    cfg, loss_fn = model.cfg, model.loss_fn
    if cfg.fs_loss != "bce":
        return loss_fn.targets(target_ids, T, model.embedding)
    H = cfg.lookahead
    cols = F.pad(target_ids[:, :T + H - 1], (0, max(0, T + H - 1 - target_ids.shape[1])), value=loss_fn.pad_id)
    out = []
    for (first, last), c in zip(cfg.chunk_offsets, cfg.chunk_vectors):
        ids = chunk_windows(cols, T, first, last, loss_fn.pad_id)                   # (B, T, L)
        e = F.normalize(model.embedding(ids).float(), dim=-1)                       # (B, T, L, D)
        out.append((e.unflatten(2, (c, -1)).mean(3), chunk_valid(ids, loss_fn.eos_id, loss_fn.pad_id)))
    return out


@torch.no_grad()
def _evaluate_model(model, inputs, targets, pad_id: int, topk, batch_size: int) -> dict:
    """Sums over real (non-pad) targets, then the means: ntp_loss, topK_acc, fs_cos_k, fs_loss_k."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    T, P, kmax = inputs.shape[1], model.cfg.fs_periods, max(topk)
    H = model.cfg.lookahead
    sums = dict.fromkeys(["nll", "targets"] + [f"top{k}" for k in topk], 0.0)
    for k in range(1, P + 1):
        sums.update({f"cos_{k}": 0.0, f"fsl_{k}": 0.0, f"n_{k}": 0.0})
    try:
        for i in range(0, len(inputs), batch_size):
            x, y = inputs[i:i + batch_size].to(device), targets[i:i + batch_size, :T + H - 1].to(device)
            logits, _ = model(x, y)                                                 # (B, T, V)
            yt = y[:, :T]                                                           # (B, T)
            real = yt != pad_id
            sums["targets"] += float(real.sum())
            sums["nll"] += float(F.cross_entropy(logits.float().flatten(0, 1), yt.flatten(), ignore_index=pad_id,
                                                 reduction="sum"))
            hits = logits.topk(kmax, dim=-1).indices == yt[..., None]               # (B, T, kmax)
            for k in topk:
                sums[f"top{k}"] += float((hits[..., :k].any(-1) & real).sum())
            for k, (target, valid) in enumerate(future_targets(model, y, T) if P else [], start=1):
                cos = F.cosine_similarity(model.future[k].float(), target.float(), dim=-1).mean(-1)  # (B, T)
                n = float(valid.sum())
                sums[f"cos_{k}"] += float((cos * valid).sum())
                sums[f"fsl_{k}"] += float(model.loss_parts[f"fs_loss_{k}"]) * n  # a masked mean in the batch
                sums[f"n_{k}"] += n
    finally:
        model.train(was_training)
    n = sums["targets"]
    out = {"ntp_loss": sums["nll"] / n}
    out.update({f"top{k}_acc": sums[f"top{k}"] / n for k in topk})
    for k in range(1, P + 1):
        m = sums[f"n_{k}"]
        out[f"fs_cos_{k}"] = sums[f"cos_{k}"] / m if m else float("nan")
        out[f"fs_loss_{k}"] = sums[f"fsl_{k}"] / m if m else float("nan")
    return out


def _entries(models, trained_dir, data, device):
    """[(label, model, data)] for names, Model objects, or a dict label -> either."""
    if isinstance(models, (str, torch.nn.Module)):
        models = [models]
    items = list(models.items()) if isinstance(models, dict) else [
        (m if isinstance(m, str) else f"model_{i}", m) for i, m in enumerate(models)]
    if not items:
        raise ValueError("no models to evaluate")
    labels = [label for label, _ in items]
    if len(set(labels)) < len(labels):
        raise ValueError(f"models {labels} are named more than once: give each a label, e.g. a dict label -> model")
    out = []
    for label, m in items:
        d = data
        if isinstance(m, str):
            name, (m, _, mcfg) = m, tools.load_model(m, trained_dir, device)
            if d is None:
                d = tools.get_data(mcfg, tools.load_configs(name, trained_dir)[1])
        elif d is None:
            raise ValueError(f"{label}: a model given as an object needs data=tools.get_data(model_cfg, train_cfg) "
                             "to evaluate on (a run given by name brings its own)")
        info = d.meta["tokenizer"]
        if (info["name"], info["vocab_len"]) != (m.cfg.tokenizer, m.cfg.vocab_len):
            raise ValueError(f"{label}: the model uses tokenizer {m.cfg.tokenizer} {m.cfg.vocab_len} but the data "
                             f"was tokenized with {info['name']} {info['vocab_len']}")
        out.append((label, m, d))
    return out


def evaluate(models, num_sequences: int | None = DEFAULT_NUM_SEQUENCES, seq_len: int | None = None,
             topk=(1, 5), trained_dir: str | None = None, data=None, batch_size: int = 16, split: str = "val",
             device: str = "auto") -> pd.DataFrame:
    """Teacher-forced next-token evaluation on many fixed validation windows; one row per model.

    models: run names, Model objects (then pass `data`), or a dict label -> either. Runs given by name
        are loaded onto `device` and evaluated on their own training data's validation split.
    num_sequences: windows of seq_len tokens, evenly spaced over the split (None = every window: the
        whole split). seq_len: None = the shortest max_seq_len among the models, so all read the same windows.
    Every real (non-pad) next-token target weighs the same, whichever window or batch it is in.
    Columns: sequences, targets (real targets scored), ntp_loss (nats per token), bpb (bits per byte, from
    the split's bytes_per_token), ppl, top{k}_acc for each k of topk, and for FutureFormers, per future
    chunk k: fs_cos_k (mean cosine between the chunk's prediction and its target, over the chunks the loss
    counts) and fs_loss_k (the model's own future-sight loss); windows (a hash of the tokens read: equal
    hashes = the same windows).
    """
    topk = tuple(sorted(set(topk)))
    entries = _entries(models, trained_dir, data, device)
    if seq_len is None:
        seq_len = min(m.cfg.max_seq_len for _, m, _ in entries)
    rows, windows = {}, {}
    for label, model, d in entries:
        if seq_len > model.cfg.max_seq_len:
            raise ValueError(f"seq_len={seq_len} is not allowed: {label} has max_seq_len={model.cfg.max_seq_len}")
        key = d.path or id(d)
        if key not in windows:  # one set of windows per data source, with the look-ahead of the longest-sighted
            lookahead = max(m.cfg.lookahead for _, m, d2 in entries if (d2.path or id(d2)) == key)
            windows[key] = validation_windows(d, seq_len, lookahead, num_sequences, split)
        inputs, targets = windows[key]
        r = _evaluate_model(model, inputs, targets, d.pad_id, topk, batch_size)
        loss = r.pop("ntp_loss")
        rows[label] = {"sequences": len(inputs), "targets": int((targets[:, :seq_len] != d.pad_id).sum()),
                       "ntp_loss": loss, "bpb": tools.bits_per_byte(loss, d.meta[split]["bytes_per_token"]),
                       "ppl": math.exp(loss) if loss < 700 else math.inf, **r}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table["windows"] = [_fingerprint(windows[d.path or id(d)][0]) for _, _, d in entries]
    table.index.name = "model"
    return table


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
            "wall_s": get(last, "elapsed_s"),
            "tokens_per_s": get(last, "tokens_per_s"),  # train.py logs the throughput so far: the last is the run's
            "val_ntp_loss": get(final, "val_ntp_loss"), "val_bpb": get(final, "val_bpb"),
            "val_from": "full" if len(full) else "last"}


def summary_table(names=None, trained_dir: str | None = None, num_sequences: int | None = DEFAULT_NUM_SEQUENCES,
                  seq_len: int | None = None, topk=(1, 5), batch_size: int = 16, device: str = "auto") -> pd.DataFrame:
    """One row per run: what it is, what training cost, and how well it predicts the next token.

    fs_periods (0 = baseline), params (model.num_params()), steps, tokens (training tokens seen), wall_s,
    tokens_per_s (training throughput, the log's last row) — from the configs and log_data.csv;
    val_ntp_loss, val_bpb: the log's final full-validation row (val_from = "full"), or its last row ("last");
    then `evaluate`'s teacher-forced eval_ntp_loss, eval_bpb, top{k}_acc, fs_cos_k over num_sequences fixed
    validation windows (num_sequences=0 skips it). Compare on the NTP loss and bits per byte columns.
    print(format_table(table)) prints it neatly.
    """
    names = resolve_names(names, trained_dir)
    rows, models = {}, {}
    for name in names:
        model, _, mcfg = tools.load_model(name, trained_dir, device)
        models[name] = model
        rows[name] = {"fs_periods": mcfg.fs_periods, "params": model.num_params(), **_log_summary(name, trained_dir)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    if num_sequences != 0:
        data = {}
        for name in names:
            mcfg, tcfg = tools.load_configs(name, trained_dir)
            d = tools.get_data(mcfg, tcfg)
            data.setdefault(d.path, (d, []))[1].append(name)
        evals = [evaluate({n: models[n] for n in group}, num_sequences, seq_len, topk, data=d, batch_size=batch_size)
                 for d, group in data.values()]
        ev = pd.concat(evals)
        ev = ev[["ntp_loss", "bpb"] + [c for c in ev.columns if c.endswith("_acc") or c.startswith("fs_cos_")]
                + ["sequences"]]
        ev = ev.rename(columns={"ntp_loss": "eval_ntp_loss", "bpb": "eval_bpb", "sequences": "eval_sequences"})
        table = table.join(ev)
    table.index.name = "model"
    return table.loc[names]


def format_table(table: pd.DataFrame, markdown: bool = False, columns=None) -> str:
    """The table as text: counts with thousands separators, losses and rates to 4 decimals, NaN as '-'.
    markdown=True writes a GitHub markdown table (numbers right-aligned), ready to paste into a README.
    columns: show only these columns, in this order (an unknown one is a ValueError naming the known ones)."""
    def fmt(col):
        if col in ("params", "steps", "tokens", "eval_sequences", "sequences", "targets", "fs_periods"):
            return lambda v: "-" if pd.isna(v) else f"{int(v):,}"
        if col in ("wall_s", "tokens_per_s"):
            return lambda v: "-" if pd.isna(v) else f"{v:,.0f}"
        return lambda v: "-" if isinstance(v, float) and math.isnan(v) else (
            f"{v:.4f}" if isinstance(v, (float, np.floating)) else str(v))
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
    parser.add_argument("--num_sequences", type=int, default=DEFAULT_NUM_SEQUENCES,
                        help="validation windows for the teacher-forced evaluation; 0 = skip it, -1 = all")
    parser.add_argument("--seq_len", type=int, default=None, help="window length (default: shortest max_seq_len)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--columns", default=None,
                        help="comma-separated table columns to print, in this order (default: all)")
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
        table = summary_table(names, args.trained_dir, None if args.num_sequences < 0 else args.num_sequences,
                              args.seq_len, batch_size=args.batch_size, device=args.device)
        print(format_table(table, markdown=args.markdown,
                           columns=args.columns.split(",") if args.columns else None))
        fig = plot_curves(names, args.metrics.split(","), x=args.x, log_x=args.log_x, log_y=args.log_y, trim=trim,
                          splits=args.splits.split(",") if args.splits else None, trained_dir=args.trained_dir,
                          path=out)
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
