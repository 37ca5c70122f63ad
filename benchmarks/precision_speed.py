"""Training speed by precision: the default step (compiled, at the precision `precision='auto'` picks on this
machine) against compiled fp32 and eager fp32, for the baseline and the default FutureFormer, measured in one run.

    python benchmarks/precision_speed.py [--steps=6] [--batch_size=32] [--key=value ...]

For each model (the default ModelConfig, any --key=value changes both; the baseline has fs_periods=0, the same trunk)
three arms take a training step as train() does (forward with the loss under tools.autocast, backward, clipping,
AdamW): eager fp32, compiled fp32, and compiled at the chosen precision ('bf16' on a CPU with bf16 units,
tools.pick_precision). After each arm's first (compiling) step, the six arms' steps alternate, so that all see the
same machine load; each arm's fastest step gives tokens per second. It prints:
  - the CPU (benchmarks/machine.py) and what 'auto' chose there, and why;
  - for each model, the default's tokens/s over eager fp32 (goal: >= 2x on a CPU with bf16 units) and over
    compiled fp32;
  - each arm's achieved FLOP/s (modules/flops.py) as a share of the fp32 and the bf16 matmul peaks, measured in the
    same run before and after the steps;
  - the FutureFormer's step over the baseline's, at the default setting (goal: <= 1.2x).
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from machine import cpu_name, matmul_peak  # noqa: E402

import hardware  # noqa: E402
import tools  # noqa: E402
from config import ModelConfig, TrainConfig, parse_overrides, replace  # noqa: E402
from modules.flops import flops_per_token  # noqa: E402
from modules.model import Model  # noqa: E402
from optimizer import make_optimizer  # noqa: E402


def make_arm(cfg, compiled: bool, precision: str, B: int):
    """A training step of a fresh model (seed 0) on one fixed batch: forward under the precision, backward, clip,
    AdamW, as train() does it."""
    torch.manual_seed(0)
    model = Model(cfg).train()
    opt = make_optimizer(model, TrainConfig(), "cpu")
    step_model = torch.compile(model) if compiled else model
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, cfg.vocab_len, (B, cfg.max_seq_len), generator=gen)
    y = torch.randint(0, cfg.vocab_len, (B, cfg.max_seq_len + cfg.lookahead - 1), generator=gen)

    def step():
        with tools.autocast("cpu", precision):
            _, loss = step_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return step


def main(argv):
    (overrides,), opts = parse_overrides(argv, ModelConfig, extra={"steps": int, "batch_size": int})
    opts = {"steps": 6, "batch_size": 32, **opts}
    B, cfg = opts["batch_size"], ModelConfig(**overrides)
    chosen, why = tools.pick_precision("auto", "cpu")
    print(cpu_name())
    print(f"precision='auto' on this CPU: {chosen} ({why}); batch {B} x {cfg.max_seq_len} tokens, "
          f"{opts['steps']} alternating steps per arm after each arm's first")
    models = {"baseline": replace(cfg, fs_periods=0), "FutureFormer": cfg}
    names = list(dict.fromkeys(("eager fp32", "compiled fp32", f"compiled {chosen}")))  # two where chosen is fp32
    arms, steps = {(m, a): [] for m in models for a in names}, {}
    for m, a in arms:
        steps[m, a] = make_arm(models[m], a.startswith("compiled"), a.split()[-1], B)
        t0 = time.perf_counter()
        with hardware.quiet_compile():
            steps[m, a]()  # the first step: compiles where compiled
        print(f"{m:>12} {a:<14} first step {time.perf_counter() - t0:6.1f} s", flush=True)
        steps[m, a]()
    peaks = {dt: [matmul_peak(dtype=dt)] for dt in (torch.float32, torch.bfloat16)}
    for _ in range(opts["steps"]):
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            arms[key].append(time.perf_counter() - t0)
    for dt in peaks:
        peaks[dt].append(matmul_peak(dtype=dt))
    peak = {dt: max(v) for dt, v in peaks.items()}
    print(f"matmul peaks measured in this run: fp32 {peak[torch.float32] / 1e9:.1f} GFLOP/s, "
          f"bf16 {peak[torch.bfloat16] / 1e9:.1f} GFLOP/s (before and after the steps, the better)")
    best = {key: min(times) for key, times in arms.items()}
    ratios = {}
    for (m, a), t in best.items():
        tokens_s = B * cfg.max_seq_len / t
        achieved = flops_per_token(models[m]) * tokens_s
        print(f"{m:>12} {a:<14} {t * 1e3:7.1f} ms/step {tokens_s:8.0f} tokens/s   {achieved / 1e9:6.1f} GFLOP/s = "
              f"{achieved / peak[torch.float32]:5.1%} of the fp32 peak, {achieved / peak[torch.bfloat16]:5.1%} "
              "of the bf16 peak")
    default = f"compiled {chosen}"
    for m in models:
        ratios[m, "eager"] = best[m, "eager fp32"] / best[m, default]
        ratios[m, "compiled"] = best[m, "compiled fp32"] / best[m, default]
        print(f"{m:>12}: the default ({default}) trains {ratios[m, 'eager']:.2f}x as many tokens/s as eager fp32 "
              f"(goal >= 2x with bf16 units) and {ratios[m, 'compiled']:.2f}x compiled fp32")
    ratios["ff/baseline"] = best["FutureFormer", default] / best["baseline", default]
    print(f"FutureFormer / baseline step time at the default: {ratios['ff/baseline']:.2f}x (goal <= 1.2x)")
    return ratios


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:  # a bad --key=value
        sys.exit(f"error: {e}")
