"""Plots of trained runs: loss curves from their logs (`plot_curves`, with seed bands for groups), the intervals of
a comparison (`plot_comparison`), differences against passes over the data (`plot_by_passes`), and checkpoint
scores along training (`plot_checkpoint_scores`). Every PNG is written through `save_plot`, which never overwrites
a file it did not write.

Data flows one way: trained/ (logs) and the tables of scoring.py and compare.py -> figures.
"""

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
import pandas as pd  # noqa: E402

import stats  # noqa: E402
from compare import find_groups  # noqa: E402
from data import SPLITS  # noqa: E402
from modules.flops import flops_per_token  # noqa: E402
from runs import load_configs, read_log, replace_atomically, resolve_names, run_train_tokens, validation_text_of  # noqa: E402

X_AXES = {"tokens": "training tokens", "step": "step", "elapsed_s": "wall time (s)",
          "flops": "training FLOPs (modules/flops.py)", "passes": "passes over the training split"}


SPLIT_STYLES = {"train": "--", "val": "-"}  # train dashed, val solid


PLOT_MARK = "FutureFormer model_comparison.py"  # written into every PNG this file saves (its Software field)


def check_plot_path(path: str, any_png: bool = False) -> None:
    """A plot may go anywhere but into a run's folder, and may replace only a PNG this file wrote (any PNG with
    any_png, for the command line's own default file), and is named .png: so a mistyped --out can never overwrite
    weights, a log, a config or anyone's picture, nor write a PNG under another kind's name. ValueError otherwise."""
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
    if os.path.splitext(full)[1].lower() != ".png":
        raise ValueError(f"{path}: plots are written as PNG files: give a file name ending in .png")


def save_plot(fig, path: str, any_png: bool = False) -> None:
    """fig as a PNG at `path` (check_plot_path first), marked as this file's so that it may be replaced."""
    check_plot_path(path, any_png)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    replace_atomically(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                                           metadata={"Software": PLOT_MARK}))


def _split_of(column: str) -> str | None:
    return next((s for s in SPLITS if column.startswith(s + "_")), None)


def _columns(metric: str, splits, available) -> list[str]:
    """The log columns one subplot draws: `metric` itself, or the metric in each split of `splits`."""
    split = _split_of(metric)
    if splits:
        base = metric[len(split) + 1:] if split else metric
        return [f"{s}_{base}" for s in splits]
    if metric in available or split:
        return [metric]
    both = [f"{s}_{metric}" for s in SPLITS]
    return both if any(c in available for c in both) else [metric]


def _trimmed(log: pd.DataFrame, trim) -> pd.DataFrame:
    """Drop the first `trim` rows (an int >= 1) or the first fraction of them (0 <= trim < 1)."""
    if isinstance(trim, bool) or not isinstance(trim, (int, float)) or trim < 0 or (
            isinstance(trim, float) and trim >= 1 and not trim.is_integer()):
        raise ValueError(f"trim={trim!r} is not allowed: a fraction 0 <= trim < 1 or a number of rows >= 1")
    n = int(trim) if trim >= 1 else int(math.floor(trim * len(log)))
    return log.iloc[n:]


def _read_log(name: str, trained_dir, passes: bool = False) -> pd.DataFrame:
    """The run's log, with a `flops` column computed from its config when the log predates it, and with passes=True
    a `passes` column: its training tokens over the tokens of its training split (`runs.run_train_tokens`)."""
    log = read_log(name, trained_dir)
    if "flops" not in log.columns and "tokens" in log.columns:
        log["flops"] = log["tokens"] * flops_per_token(load_configs(name, trained_dir)[0])
    if passes and "tokens" in log.columns:
        log["passes"] = log["tokens"] / run_train_tokens(name, trained_dir)
    return log


def plot_curves(names=None, metrics=("val_ntp_loss", "val_bpb"), x: str = "tokens", log_x: bool = False,
                log_y: bool = False, trim=0, splits=None, trained_dir: str | None = None, path: str | None = None,
                groups: dict | None = None, group_seeds: bool = True):
    """Training curves of several runs from their log_data.csv: one subplot per metric, one line per run.

    metrics: log columns, e.g. "val_ntp_loss", "val_bpb", "train_ntp_loss", "lr", "grad_norm",
        "val_fs_target_cos_1"; a name without its split ("ntp_loss") draws both splits.
    splits: e.g. ("train", "val") draws each metric in those splits, train dashed and val solid (any split
        prefix of the metric is replaced); None = the metrics as given.
    x: "tokens" (training tokens seen; fair across batch sizes and context lengths), "step", "elapsed_s",
        "flops" (training FLOPs: fair across model sizes; computed from the config for logs without it) or
        "passes" (training tokens over the tokens of the run's training split: how often it has seen its data, so
        runs on data of different sizes share an axis).
    log_x, log_y: logarithmic axes (rows at x <= 0 are left out of a log x axis).
    trim: drop the first fraction (0 <= trim < 1) or the first N rows (an int) of every curve, to zoom in
        past the steep start.
    groups, group_seeds: seeds of one configuration (`find_groups`: recorded groups, NAME_s<seed> names, and
        the explicit `groups`) are drawn as one line, their mean at each step, in a band from the lowest to the
        highest seed; group_seeds=False draws every run on its own.
    path: also save the figure there as a PNG.
    The final row of a log (full_val = 1) holds val_* over the whole validation split, not a sample of
    batches: it is drawn with a dot. Validation curves are only drawn together when the runs validated on the
    same text (`runs.validation_text_of`): a metric with validation columns gets one panel per validation text,
    named in its title, so that curves measured on different texts never share axes. Returns the matplotlib Figure.
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
                # read first: a run without a log adds no empty group
                log = _read_log(name, trained_dir, passes=x == "passes")
            except FileNotFoundError as e:
                warnings.warn(f"{name}: {e}; left out of the plot", stacklevel=2)
                continue
            logs.setdefault(label, []).append(log)
    texts = {label: validation_text_of(found[label][0], trained_dir) for label in logs}
    panels = []  # (metric, validation text or None): one panel per text for a metric with validation columns
    for metric in metrics:
        has_val = any(_split_of(c) == "val" for log in logs.values() for c in _columns(metric, splits, log[0].columns))
        panels += [(metric, text) for text in dict.fromkeys(texts.values())] if has_val else [(metric, None)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels) + 2.5, 4.2), squeeze=False,
                             layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (metric, text) in zip(axes[0], panels):
        for i, (label, runs) in enumerate(logs.items()):
            color = colors[i % len(colors)]  # a run keeps its colour in every panel
            if text is not None and texts[label] != text:
                continue
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
        title = metric[len(split) + 1:] if splits and split else metric
        ax.set_title(title + (f"\nvalidated on {text}" if text else ""), fontsize=10 if text else None)
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
                 + ("; band: lowest to highest seed" if banded else ""), fontsize=9, x=0.01, ha="left")
    if path:
        save_plot(fig, path)
    return fig


def _bars_caption(kinds: set) -> str:
    """What the interval bars of a figure cover: kinds holds, per bar, whether it is over windows and seeds."""
    if kinds == {True}:
        return "bars: intervals over windows and seeds"
    if kinds == {False}:
        return "bars: intervals over windows only (one run a side: seed noise not in them)"
    return "thick bars: over windows and seeds; thin: over windows only (seed noise not in them)"


def plot_comparison(table: pd.DataFrame, path: str | None = None, ax=None):
    """compare()'s table as a picture: each row's difference from the reference in %, with its interval as a
    bar (thick: over windows and seeds; thin: over windows only, seed noise not in it), green where the verdict is
    better, red where worse, grey where not resolved. The title names the reference; the caption describes only the
    kinds of bar drawn. Returns the Figure."""
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
    reference = table.attrs.get("reference")
    ax.set_xlabel(f"bits per byte, % difference from {reference} ({level}% interval)")
    caption = _bars_caption({r["covers"].startswith("windows and seeds") for _, r in rows.iterrows()})
    ax.set_title(f"against {reference}\n{caption}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    fig = ax.figure
    fig.tight_layout()
    if path:
        save_plot(fig, path)
    return fig


def run_passes(name: str, trained_dir: str | None = None) -> float:
    """The passes a saved run made over its training split: its log's last `tokens` over run_train_tokens."""
    log = read_log(name, trained_dir)
    if log.empty or "tokens" not in log.columns:
        raise ValueError(f"run {name!r} has no logged tokens: its passes cannot be counted")
    return float(log["tokens"].iloc[-1]) / run_train_tokens(name, trained_dir)


def plot_by_passes(points: dict, trained_dir: str | None = None, path: str | None = None, ax=None):
    """Differences from a reference against how often the runs saw their training text, so that comparisons on
    texts of different sizes and at different lengths share one axis (logarithmic).

    points: {series label: [(table, row label), ...]}: rows of compare() tables (not their reference rows). Each
        is drawn at the mean passes of its group's runs (`run_passes`) and at its difference in bits per byte, in %
        of its own table's reference, with its interval as a bar (thick: over windows and seeds; thin: over windows
        only), a series' points joined in order of passes, one colour per series. With several series, each is
        moved sideways by 2% of x, so that bars at one number of passes do not hide each other.
    Returns the Figure."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7.5, 4.2))
    kinds = set()
    for i, (series, rows) in enumerate(points.items()):
        color = f"C{i % 10}"
        xy = []
        for table, label in rows:
            if label not in table.index:
                raise ValueError(f"{series}: {label!r} is not a row of the table: {list(table.index)}")
            r = table.loc[label]
            if r["verdict"] == "reference":
                raise ValueError(f"{series}: {label!r} is its table's reference: it has no difference to draw")
            members = table.attrs["groups"][label]
            x = sum(run_passes(m, trained_dir) for m in members) / len(members)
            x *= 1 + 0.02 * (i - (len(points) - 1) / 2)  # series dodged sideways, so that bars at one x stay apart
            seeds = r["covers"].startswith("windows and seeds")
            kinds.add(seeds)
            ax.plot([x, x], [r["lo_pct"], r["hi_pct"]], "-", color=color, lw=6 if seeds else 2.5,
                    alpha=0.45 if seeds else 0.9, solid_capstyle="butt")
            xy.append((x, r["d_pct"]))
        xy.sort()
        ax.plot([p[0] for p in xy], [p[1] for p in xy], "o-", color=color, label=series)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel("passes over the training split" + (" (series dodged by 2% each)" if len(points) > 1 else ""))
    level = round(100 * next(iter(points.values()))[0][0].attrs.get("level", stats.LEVEL)) if points else 95
    ax.set_ylabel(f"bits per byte, % difference from the reference\n({level}% interval)")
    ax.set_title(f"each point against its own comparison's reference; {_bars_caption(kinds)}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig = ax.figure
    fig.tight_layout()
    if path:
        save_plot(fig, path)
    return fig


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
