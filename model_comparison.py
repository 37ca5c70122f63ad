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
same quantity for every model; bits per byte (`bits_per_byte`) divides it by the bytes each token covers,
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
import math
import os
import sys

import numpy as np
import pandas as pd

import plots  # first: it picks the file-only backend for scripts without a display, before pyplot loads
from compare import compare, find_groups, format_comparison  # noqa: F401  (also mc.find_groups, for notebooks)
from data import VALID_SAMPLE_PATH, DataSourceError
from generation import compare_samples, show_predictions  # noqa: F401  (also mc.show_predictions)
from modules.flops import flops_per_token
from modules.model import Model
from plots import (  # noqa: F401  (also mc.plot_curves, ...)
    X_AXES,
    check_plot_path,
    plot_by_passes,
    plot_checkpoint_scores,
    plot_comparison,
    plot_curves,
    save_plot,
)
from runs import TRAINED_DIR, list_runs, load_configs, read_log, resolve_names, validation_text_of
from scoring import checkpoint_scores, evaluate  # noqa: F401  (also mc.evaluate)

plt = plots.plt

# ---------------------------------------------------------------- choosing runs




MAIN_RUNS = ("baseline", "futureformer", "baseline_7layers")  # the README's main comparison


def default_names(trained_dir: str | None = None) -> list[str]:
    """A fixed, named set of runs to compare: the README's main comparison (MAIN_RUNS, those that are there) and
    your newest run, the one whose recorded start time (TrainConfig.started) is latest; runs that recorded none
    (the committed ones, trained before the field existed) are never taken for yours. File times are not used: in
    a fresh clone every file has the clone's time."""
    runs = list_runs(trained_dir)
    main = [n for n in MAIN_RUNS if n in runs]
    started = {n: load_configs(n, trained_dir)[1].started for n in runs if n not in main}
    started = {n: t for n, t in started.items() if t}
    return main + ([max(started, key=lambda n: (started[n], n))] if started else [])


# ---------------------------------------------------------------- the summary table


def _log_summary(name: str, trained_dir) -> dict:
    """Training facts from the run's log: steps, tokens, wall time, throughput, final validation NTP loss."""
    try:
        log = read_log(name, trained_dir)
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

    One text for every run. The eval_* columns, the headline, always score every run on one text: `val_data_path`,
    else the runs' own validation text when they share one, else the official validation excerpt
    (VALID_SAMPLE_PATH); where that is missing too, a ValueError asks for val_data_path. `table.attrs["eval_text"]`
    names it. The logged val_ntp_loss and val_bpb are each run's own text (`val_text`, runs.validation_text_of):
    when the runs' texts differ they are split into one column per text ("val_bpb on TEXT"), blank elsewhere.
    """
    names = resolve_names(names, trained_dir)
    rows = {}
    for name in names:
        mcfg, _ = load_configs(name, trained_dir)
        params = sum(p.numel() for p in Model(mcfg).parameters())  # from the config: runs without weights too
        rows[name] = {"fs_periods": mcfg.fs_periods, "params": params, **_log_summary(name, trained_dir),
                      "val_text": validation_text_of(name, trained_dir)}
        if "tokens" in rows[name] and "flops" not in rows[name]:
            rows[name]["flops"] = rows[name]["tokens"] * flops_per_token(mcfg)
    table = pd.DataFrame.from_dict(rows, orient="index")
    texts = list(dict.fromkeys(table["val_text"]))
    if len(texts) > 1:  # logged scores on different texts never share a column
        for col in [c for c in ("val_ntp_loss", "val_bpb") if c in table.columns]:
            for text in texts:
                table[f"{col} on {text}"] = table[col].where(table["val_text"] == text)
            table = table.drop(columns=col)
    if val_data_path is None and len(texts) > 1:
        if not os.path.isfile(VALID_SAMPLE_PATH):
            raise ValueError(f"the runs validated on {len(texts)} different texts ({'; '.join(texts)}): pass "
                             "val_data_path= (--val_data_path) to score them all on one")
        val_data_path = VALID_SAMPLE_PATH
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
    table = table.loc[names]
    if num_sequences != 0:
        table.attrs["eval_text"] = os.path.basename(val_data_path) if val_data_path else texts[0]
    return table


TABLE_COLUMNS = ("params", "tokens", "tokens_per_s", "eval_bpb", "top1_acc", "top5_acc", "val_bpb")  # the default


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




# ---------------------------------------------------------------- per-position predictions




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
    plots.matplotlib.use("Agg")  # the command line only writes files
    try:
        names = resolve_names(args.names, args.trained_dir)
    except (FileNotFoundError, ValueError) as e:  # ValueError: a run named twice
        print(f"error: {e}", file=sys.stderr)
        return 2
    trim = int(args.trim) if args.trim >= 1 else args.trim
    out = args.out or os.path.join(args.trained_dir or TRAINED_DIR, "model_comparison.png")
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
        if label in groups:
            print(f"error: --group={label}=... is given twice: give each group once, with all its runs",
                  file=sys.stderr)
            return 2
        groups[label] = [m for m in members.split(",") if m]
    if args.checkpoints:
        try:
            table = checkpoint_scores(names, args.trained_dir, args.val_data_path, args.batch_size, args.device)
            fig = plot_checkpoint_scores(table, out)
        except (OSError, DataSourceError, ValueError) as e:  # OSError: a full disk, a folder not writable
            print(f"error: {e}", file=sys.stderr)
            return 2
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
        if "eval_text" in table.attrs:
            print(f"eval_*: teacher-forced, every run on one text: {table.attrs['eval_text']}")
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
    except (OSError, DataSourceError, ValueError) as e:  # OSError: a full disk, a folder not writable
        print(f"error: {e}", file=sys.stderr)
        return 2
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
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C: one line, no traceback (nothing is half-written: files are replaced whole)
        print("\nmodel_comparison.py: interrupted", file=sys.stderr)
        sys.exit(130)
