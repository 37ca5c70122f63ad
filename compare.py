"""Groups of runs compared with 95% intervals over seeds and validation windows (stats.py does the arithmetic):
`compare` pairs or pools each group against a reference on the same windows, `format_comparison` prints the
table, and every difference gets its verdict word only when its interval says so.

Data flows one way: per-window scores (scoring.py) -> intervals -> a table.
"""

import os

import numpy as np
import pandas as pd

import stats
from data import bits_per_byte
from runs import SEED_SUFFIX, load_configs, resolve_names, run_path, same_run
from scoring import window_scores


def find_groups(names, trained_dir: str | None = None, groups: dict | None = None) -> dict:
    """{label: [run names]}: which runs are seeds of one configuration, in the order the runs are given.

    groups: explicit {label: [run, ...]} (a run may be in one group only). Runs not in it are grouped by the
    `group` their train_config.json records (train.py --seeds writes it), or else by a NAME_s<seed> name; a
    run with neither is a group of its own, labelled with its name."""
    names = resolve_names(names, trained_dir)
    folder = {os.path.realpath(run_path(n, trained_dir)): n for n in names}  # a run named in any form -> as in names
    explicit, owner = groups or {}, {}
    for label, members in explicit.items():
        if not members:
            raise ValueError(f"group {label!r} has no runs")
        for given in members:
            name = folder.setdefault(os.path.realpath(run_path(given, trained_dir)), given)
            if name in owner:
                where = f"groups {owner[name]!r} and {label!r}" if owner[name] != label else f"group {label!r} twice"
                raise ValueError(f"run {given!r} is in {where}: give it one place")
            if name not in names:
                names.append(name)
            owner[name] = label
    out = {}
    for name in names:
        label = owner.get(name)
        if label is None:
            recorded = load_configs(name, trained_dir)[1].group
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
        the same windows); VALID_SAMPLE_PATH is the official validation text.
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
                         "val_data_path= (e.g. VALID_SAMPLE_PATH) to score all on one text")
    if reference is None:
        ref = next(iter(groups))
    elif reference in groups:
        ref = reference
    else:
        ref = next((label for label, members in groups.items()
                    if any(same_run(reference, m, trained_dir) for m in members)), None)
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
        row = {"runs": len(seeds[label]), "ntp_loss": mean, "bpb": bits_per_byte(mean, bpt),
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
            row.update(d_ntp=r["diff"], d_bpb=bits_per_byte(r["diff"], bpt), d_pct=100 * r["rel"],
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
    recorded = [load_configs(name, trained_dir)[1].seed for name in members]
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
