"""Generation speed: greedy decoding with the KV cache, eager and compiled, vs a full forward pass per token,
measured in one run.

    python benchmarks/generate_speed.py [--tokens=200] [--repeats=3] [--threads=N] [--key=value ...]

The default ModelConfig (any --key=value overrides it) with random weights, and a baseline with
fs_periods=0. Each generates `tokens` tokens greedily from an empty prompt, eos masked so that no run
stops early (generate_ids(..., stop_at_eos=False)), three ways: cached (eager), cached through the compiled
one-token step (generation.CompiledStep, compiled once before the timed runs: its compile time is printed), and
uncached. The runs alternate, so that all see the same machine load; the fastest run of each gives tokens per
second and the speed-ups (goal: compiled cached >= 10x uncached at 200 tokens). The three texts must be identical,
and the benchmark says whether they are. --threads sets torch's thread count (default: torch's own): one token
at a time is a chain of tiny operations, and on a busy 2-core machine two threads can stall each other.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from machine import cpu_name  # noqa: E402

import tools  # noqa: E402
from config import ModelConfig, parse_overrides, replace  # noqa: E402
from generation import generate_ids  # noqa: E402
from modules.model import Model  # noqa: E402


def parse(argv):
    """(options, ModelConfig overrides) from --key=value arguments (config.parse_overrides)."""
    (overrides,), opts = parse_overrides(argv, ModelConfig, extra={"tokens": int, "repeats": int, "threads": int})
    return {"tokens": 200, "repeats": 3, "threads": 0, **opts}, overrides


ARMS = {"cached": (True, False), "compiled": (True, True), "uncached": (False, False)}  # (use_kv_cache, compile)


def run(model, tokenizer, n: int, arm: str):
    """(seconds, ids) of generating n tokens greedily from bos alone, eos masked, the arm's way."""
    use_kv_cache, compile = ARMS[arm]
    t0 = time.perf_counter()
    ids = generate_ids([tokenizer.bos_id], model, tokenizer, max_gen_len=n, temperature=0,
                       use_kv_cache=use_kv_cache, stop_at_eos=False, compile=compile)
    return time.perf_counter() - t0, ids


def main(argv):
    opts, overrides = parse(argv)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    ff_cfg = ModelConfig(**overrides)
    configs = {"FutureFormer": ff_cfg, "baseline": replace(ff_cfg, fs_periods=0)}
    tokenizer = tools.get_tokenizer(ff_cfg.tokenizer, ff_cfg.vocab_len)
    n = opts["tokens"]
    print(cpu_name())
    print(f"greedy, {n} tokens from an empty prompt, max_seq_len {ff_cfg.max_seq_len}, {opts['repeats']} "
          "alternating runs each")
    ratios = {}
    for name, cfg in configs.items():
        torch.manual_seed(0)
        model = Model(cfg).eval()
        for arm in ARMS:  # warm-up; the compiled arm compiles here
            t0 = time.perf_counter()
            run(model, tokenizer, n, arm)
            if arm == "compiled":
                compile_s = time.perf_counter() - t0
        times, out = {arm: [] for arm in ARMS}, {}
        for _ in range(opts["repeats"]):
            for arm in ARMS:
                seconds, out[arm] = run(model, tokenizer, n, arm)
                times[arm].append(seconds)
        best = {arm: min(t) for arm, t in times.items()}
        ratios[name] = {"cached": best["uncached"] / best["cached"], "compiled": best["uncached"] / best["compiled"],
                        "compiled/cached": best["cached"] / best["compiled"]}
        same = out["cached"] == out["uncached"] == out["compiled"]
        print(f"{name:>12} ({model.num_params() / 1e6:.3f}M): " + ", ".join(
            f"{arm} {best[arm]:6.2f} s ({n / best[arm]:5.0f} tokens/s)" for arm in ARMS) + f"; same text: {same}")
        print(f"{name:>12}: cached {ratios[name]['cached']:.1f}x faster than uncached, compiled cached "
              f"{ratios[name]['compiled']:.1f}x (goal >= 10x), compiled {ratios[name]['compiled/cached']:.1f}x "
              f"the eager cached step; the compile took {compile_s:.1f} s with the first compiled run")
    return ratios


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:  # a bad --key=value
        sys.exit(f"error: {e}")
