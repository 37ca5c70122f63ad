"""Tokenizing a data file into the uint16 cache with one process and with several, measured in one run.

    python benchmarks/data_speed.py [--data_path=../shared/data/tinystories_sample.txt] [--workers=2] [--rounds=2]
                                    [--copies=1]

Builds the cache of data_path (validation held out, as train.py does) with 1 process and with --workers processes,
alternating, in fresh temporary folders each round; prints each one's MB/s of story text (the best round, the
processes' start-up included) and whether the ids are identical. --copies=N tokenizes a file of N copies of the
text instead (a larger local file: each process's start-up, which imports torch, weighs less).
"""

import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import data as data_pipeline  # noqa: E402  (`data` names the ids below)
import tools  # noqa: E402
from config import ModelConfig, TrainConfig, parse_overrides  # noqa: E402


def main(argv):
    (m_over, t_over), opts = parse_overrides(argv, ModelConfig, TrainConfig, extra={"workers": int, "rounds": int,
                                                                                         "copies": int})
    workers, rounds, copies = opts.get("workers", 2), opts.get("rounds", 2), opts.get("copies", 1)
    mcfg = ModelConfig(**m_over)
    t_over.setdefault("data_path", tools.SAMPLE_PATH)
    if copies > 1:
        big = os.path.join(tempfile.mkdtemp(), f"{copies}x.txt")
        with open(data_pipeline._resolve_data_path(t_over["data_path"]), encoding="utf-8") as f:
            text = f.read()
        with open(big, "w", encoding="utf-8") as f:
            f.write(text * copies)
        t_over["data_path"] = big
    best, data = {}, {}
    for _ in range(rounds):
        for n in (1, workers):
            with tempfile.TemporaryDirectory() as tmp:
                tcfg = TrainConfig(**{**t_over, "data_cache_dir": tmp, "tokenize_workers": n})
                t0 = time.perf_counter()
                d = tools.get_data(mcfg, tcfg)
                best[n] = min(best.get(n, float("inf")), time.perf_counter() - t0)
                data[n] = {s: np.array(d.split(s)) for s in tools.SPLITS}
                text = sum(d.meta[s]["bytes"] for s in tools.SPLITS)
    same = all(np.array_equal(data[1][s], data[workers][s]) for s in tools.SPLITS)
    for n in (1, workers):
        print(f"{n} process(es): {best[n]:.2f} s, {text / best[n] / 1e6:.2f} MB/s of text")
    print(f"{workers} processes / 1: {best[1] / best[workers]:.2f}x; identical ids: {same}")
    return best


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"error: {e}")
