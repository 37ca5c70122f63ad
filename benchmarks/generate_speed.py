"""Generation speed: greedy decoding with the KV cache vs a full forward pass per token, measured in one run.

    python benchmarks/generate_speed.py [--tokens=200] [--repeats=3] [--threads=N] [--key=value ...]

The default ModelConfig (any --key=value overrides it) with random weights, and a baseline with
fs_periods=0. Each generates `tokens` tokens greedily from an empty prompt, eos masked so that no run
stops early (generate_ids(..., stop_at_eos=False)). Cached and uncached runs alternate, so that both
see the same machine load; the fastest run of each gives tokens per second and the speed-up (goal:
cached >= 3x). The cached and uncached texts must be identical, and the benchmark says whether they are.
--threads sets torch's thread count (default: torch's own): one token at a time is a chain of tiny
operations, and on a busy 2-core machine two threads can stall each other.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools  # noqa: E402
from config import ModelConfig, parse_overrides, replace  # noqa: E402
from inference import generate_ids  # noqa: E402
from modules.model import Model  # noqa: E402


def parse(argv):
    """(options, ModelConfig overrides) from --key=value arguments (config.parse_overrides)."""
    (overrides,), opts = parse_overrides(argv, ModelConfig, extra={"tokens": int, "repeats": int, "threads": int})
    return {"tokens": 200, "repeats": 3, "threads": 0, **opts}, overrides


def run(model, tokenizer, n: int, use_kv_cache: bool):
    """(seconds, ids) of generating n tokens greedily from bos alone, eos masked."""
    t0 = time.perf_counter()
    ids = generate_ids([tokenizer.bos_id], model, tokenizer, max_gen_len=n, temperature=0,
                       use_kv_cache=use_kv_cache, stop_at_eos=False)
    return time.perf_counter() - t0, ids


def main(argv):
    opts, overrides = parse(argv)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    ff_cfg = ModelConfig(**overrides)
    configs = {"FutureFormer": ff_cfg, "baseline": replace(ff_cfg, fs_periods=0)}
    tokenizer = tools.get_tokenizer(ff_cfg.tokenizer, ff_cfg.vocab_len)
    n = opts["tokens"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, greedy, {n} tokens from an empty "
          f"prompt, max_seq_len {ff_cfg.max_seq_len}, {opts['repeats']} alternating runs each")
    ratios = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = Model(cfg).eval()

        run(model, tokenizer, n, True), run(model, tokenizer, n, False)  # warm-up
        times, out = {True: [], False: []}, {}
        for _ in range(opts["repeats"]):
            for use_kv_cache in (True, False):
                seconds, out[use_kv_cache] = run(model, tokenizer, n, use_kv_cache)
                times[use_kv_cache].append(seconds)
        cached, full = min(times[True]), min(times[False])
        ratios[name] = full / cached
        print(f"{name:>12} ({model.num_params() / 1e6:.3f}M): cached {cached:6.2f} s ({n / cached:6.0f} tokens/s), "
              f"uncached {full:6.2f} s ({n / full:6.0f} tokens/s), cached {ratios[name]:.1f}x faster "
              f"(goal >= 3x); same text: {out[True] == out[False]}")
    return ratios


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:  # a bad --key=value
        sys.exit(f"error: {e}")
