"""Training-step speed: the plain baseline vs FutureFormer settings with the same trunk, measured in one run.

    python benchmarks/train_speed.py [--steps=10] [--batch_size=32] [--settings=default,lean,fastest] [--key=value ...]

Every model uses the default ModelConfig (any --key=value overrides it for all of them); the baseline has
fs_periods=0, and each FutureFormer setting (SETTINGS, chosen with --settings) adds its own options. Steps
alternate between the models so that all see the same machine load. The fastest step of each (the one least
disturbed by whatever else the machine did) gives tokens per second and the ratio to the baseline (goal: a
setting <= 1.15x, the default no worse than 1.38x); the ratio of the medians is printed beside it. Each model's
achieved FLOP/s (modules/flops.py's training FLOPs per token x tokens per second of its fastest step) is printed as
a share of the fp32 matmul peak measured in the same run (benchmarks/machine.py), before and after the steps.
"""

import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from machine import matmul_peak  # noqa: E402

from config import ModelConfig, parse_overrides, replace  # noqa: E402
from modules.flops import flops_per_token  # noqa: E402
from modules.model import Model  # noqa: E402

# FutureFormer settings, as ModelConfig changes on top of the command line's (modules/layer.py, config.py):
# lean = the cheapest future-sight layer options with the default memory rule; fastest = lean reading only
# the predictions made at each position itself (fs_memory='self', docs/design.md §2)
SETTINGS = {
    "default": {},
    "parallel": {"fs_attention": "parallel"},
    "joint": {"fs_attention": "joint"},
    "dual": {"fs_attention": "dual"},
    "shared_kv": {"fs_shared_memory_kv": True},
    "lean": {"fs_attention": "dual", "fs_shared_memory_kv": True, "fs_head_norm": False},
    "fastest": {"fs_attention": "dual", "fs_shared_memory_kv": True, "fs_head_norm": False, "fs_memory": "self"},
}


def parse(argv):
    """(options, ModelConfig overrides) from --key=value arguments (config.parse_overrides)."""
    (overrides,), opts = parse_overrides(argv, ModelConfig, extra={"steps": int, "batch_size": int,
                                                                   "seq_len": int | None, "settings": str})
    opts = {"steps": 10, "batch_size": 32, "seq_len": None, "settings": "default,lean,fastest", **opts}
    opts["settings"] = [s for s in opts["settings"].split(",") if s]
    unknown = [s for s in opts["settings"] if s not in SETTINGS]
    if unknown or not opts["settings"]:
        raise ValueError(f"--settings={','.join(opts['settings'])}: choose names from {list(SETTINGS)}")
    return opts, overrides


def main(argv):
    opts, overrides = parse(argv)
    torch.manual_seed(0)
    base_cfg = ModelConfig(**overrides)
    configs = {"baseline": replace(base_cfg, fs_periods=0)}
    for name in opts["settings"]:
        configs["FutureFormer" if name == "default" else f"FF {name}"] = replace(base_cfg, **SETTINGS[name])
    B, T = opts["batch_size"], opts["seq_len"] or base_cfg.max_seq_len
    runs = {}
    for name, cfg in configs.items():
        model = Model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x = torch.randint(0, cfg.vocab_len, (B, T))
        y = torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1))
        runs[name] = (model, opt, x, y, [])
        changes = SETTINGS.get(name.removeprefix("FF "), {}) if cfg.fs_periods else {}
        print(f"{name:>16}: {model.num_params() / 1e6:.3f}M parameters, {cfg.num_layers} layers "
              f"({cfg.fs_periods} future-sight), dim {cfg.dim}{'  ' + str(changes) if changes else ''}")

    def step(model, opt, x, y):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for model, opt, x, y, _ in runs.values():  # warm-up
        step(model, opt, x, y)
    peaks = [matmul_peak()]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {B} x {T} tokens, "
          f"{opts['steps']} alternating steps each")
    for _ in range(opts["steps"]):
        for model, opt, x, y, times in runs.values():
            t0 = time.perf_counter()
            step(model, opt, x, y)
            times.append(time.perf_counter() - t0)
    peaks.append(matmul_peak())
    peak = max(peaks)
    best = {name: min(r[4]) for name, r in runs.items()}
    med = {name: statistics.median(r[4]) for name, r in runs.items()}
    ratios = {}
    for name in runs:
        ratios[name] = best[name] / best["baseline"]
        print(f"{name:>16}: {best[name] * 1e3:8.1f} ms/step (median {med[name] * 1e3:.1f})  "
              f"{B * T / best[name]:9.0f} tokens/s  {ratios[name]:.2f}x the baseline "
              f"(medians {med[name] / med['baseline']:.2f}x)")
    print(f"fp32 matmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s (before the steps {peaks[0] / 1e9:.1f}, "
          f"after {peaks[1] / 1e9:.1f}); a training step, counting modules/flops.py's FLOPs per token:")
    for name, cfg in configs.items():
        achieved = flops_per_token(cfg, T) * B * T / best[name]
        print(f"{name:>16}: {flops_per_token(cfg, T) / 1e6:6.2f} MFLOP/token, {achieved / 1e9:6.1f} GFLOP/s, "
              f"{achieved / peak:5.1%} of the peak")
    for name in list(runs)[1:]:
        goal = "before the options: 1.32-1.38x" if name == "FutureFormer" else "goal: a setting <= 1.15x"
        print(f"{name} / baseline step time: {ratios[name]:.2f}x ({goal}); "
              f"ratio of medians {med[name] / med['baseline']:.2f}x")
    return ratios


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:  # a bad --key=value
        sys.exit(f"error: {e}")
