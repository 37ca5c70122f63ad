"""Training-step speed: the plain baseline vs a FutureFormer with the same trunk, measured in one run.

    python benchmarks/train_speed.py [--steps=10] [--batch_size=32] [--key=value ...]

Both models use the default ModelConfig (any --key=value overrides it for both); the baseline has
fs_periods=0. Steps alternate between the two models so that both see the same machine load. The
fastest step of each (the one least disturbed by whatever else the machine did) gives tokens per second
and the ratio (goal: FutureFormer <= 1.3x); the ratio of the medians is printed beside it.
"""

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config import ModelConfig, parse_overrides, replace  # noqa: E402
from modules.model import Model  # noqa: E402


def parse(argv):
    """(options, ModelConfig overrides) from --key=value arguments (config.parse_overrides)."""
    (overrides,), opts = parse_overrides(argv, ModelConfig,
                                         extra={"steps": int, "batch_size": int, "seq_len": int | None})
    return {"steps": 10, "batch_size": 32, "seq_len": None, **opts}, overrides


def main(argv):
    opts, overrides = parse(argv)
    torch.manual_seed(0)
    ff_cfg = ModelConfig(**overrides)
    configs = {"baseline": replace(ff_cfg, fs_periods=0), "FutureFormer": ff_cfg}
    B, T = opts["batch_size"], opts["seq_len"] or ff_cfg.max_seq_len
    runs = {}
    for name, cfg in configs.items():
        model = Model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, cfg.vocab_len, (B, T))
        y = torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1))
        runs[name] = (model, opt, x, y, [])
        print(f"{name:>12}: {model.num_params() / 1e6:.3f}M parameters, {cfg.num_layers} layers "
              f"({cfg.fs_periods} future-sight), dim {cfg.dim}")

    def step(model, opt, x, y):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt, x, y, _ in runs.values():  # warm-up
        step(model, opt, x, y)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {B} x {T} tokens, "
          f"{opts['steps']} alternating steps each")
    for _ in range(opts["steps"]):
        for model, opt, x, y, times in runs.values():
            t0 = time.perf_counter()
            step(model, opt, x, y)
            times.append(time.perf_counter() - t0)
    best = {name: min(r[4]) for name, r in runs.items()}
    med = {name: statistics.median(r[4]) for name, r in runs.items()}
    for name in runs:
        print(f"{name:>12}: {best[name] * 1e3:8.1f} ms/step (median {med[name] * 1e3:.1f})  "
              f"{B * T / best[name]:9.0f} tokens/s")
    ratio = best["FutureFormer"] / best["baseline"]
    print(f"FutureFormer / baseline step time: {ratio:.2f}x (goal <= 1.30x); "
          f"ratio of medians {med['FutureFormer'] / med['baseline']:.2f}x")
    return ratio


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:  # a bad --key=value
        sys.exit(f"error: {e}")
