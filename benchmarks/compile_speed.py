"""torch.compile on a CPU: is a compiled training step worth its compile time, and does it compute the same?

    python benchmarks/compile_speed.py [--rounds=4] [--steps=5] [--check_steps=50] [--batch_size=32] [--key=value ...]

For the default baseline and the default FutureFormer (any --key=value changes both), a training step as train()
takes it (forward with the loss, backward, gradient clipping, AdamW), with the model eager and with the model
wrapped in torch.compile as `train.py --compile=true` does:
  - compile time: the first compiled step (tracing and code generation) minus an eager step;
  - speed: after warm-up, rounds of --steps steps alternate between eager and compiled; each arm's best round
    gives tokens per second and the speed-up;
  - equality: the same weights and batches trained --check_steps steps both ways with dropout off (compiled
    dropout draws other random numbers than eager, so with dropout on only the statistics could agree): the
    largest relative difference between the two loss curves.
The decision rule of the issue: compile by default on a CPU only if it is at least 10% faster and the losses agree
within float tolerance.
"""

import copy
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from config import ModelConfig, TrainConfig, parse_overrides, replace  # noqa: E402
from modules.model import Model  # noqa: E402
from optimizer import make_optimizer  # noqa: E402


def batches(cfg, B, n, seed=0):
    gen = torch.Generator().manual_seed(seed)
    T = cfg.max_seq_len
    return [(torch.randint(0, cfg.vocab_len, (B, T), generator=gen),
             torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1), generator=gen)) for _ in range(n)]


def make_step(model, opt, step_model, grad_clip):
    def step(x, y):
        _, loss = step_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        return float(loss)
    return step


def arm(cfg, tcfg, compiled: bool, seed=0):
    torch.manual_seed(seed)
    model = Model(cfg).train()
    opt = make_optimizer(model, tcfg, "cpu")
    for group in opt.param_groups:
        group["lr"] = 1e-3
    return model, make_step(model, opt, torch.compile(model) if compiled else model, tcfg.grad_clip)


def measure(name, cfg, tcfg, B, rounds, steps, check_steps):
    data = batches(cfg, B, max(steps, 2))
    _, eager = arm(cfg, tcfg, False)
    _, compiled = arm(cfg, tcfg, True)
    eager(*data[0])  # warm-up
    t0 = time.perf_counter()
    eager(*data[1])
    t_eager = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled(*data[0])  # traces and generates code
    compile_s = time.perf_counter() - t0 - t_eager
    compiled(*data[1])
    best = {"eager": float("inf"), "compiled": float("inf")}
    for _ in range(rounds):
        for label, step in (("eager", eager), ("compiled", compiled)):
            t0 = time.perf_counter()
            for x, y in data[:steps]:
                step(x, y)
            best[label] = min(best[label], (time.perf_counter() - t0) / steps)
    if not check_steps:
        diff, losses = float("nan"), {"eager": [float("nan")], "compiled": [float("nan")]}
    else:
        diff, losses = equality(cfg, tcfg, B, check_steps)
    tokens = B * cfg.max_seq_len
    speedup = best["eager"] / best["compiled"]
    print(f"{name:>12}: compile {compile_s:5.1f} s; eager {best['eager'] * 1e3:7.1f} ms/step "
          f"({tokens / best['eager']:7.0f} tokens/s), compiled {best['compiled'] * 1e3:7.1f} ms/step "
          f"({tokens / best['compiled']:7.0f} tokens/s): {speedup:.2f}x; losses over {check_steps} steps "
          f"(dropout off) differ by at most {diff:.1e} (relative); last {losses['eager'][-1]:.4f} vs "
          f"{losses['compiled'][-1]:.4f}")
    return {"compile_s": compile_s, "speedup": speedup, "max_rel_diff": diff}


def equality(cfg, tcfg, B, check_steps):
    """Train the same start on the same batches both ways, dropout off: the largest relative difference of the
    losses over the steps, and the two loss curves."""
    plain = replace(cfg, dropout_rate=0.0)
    check = batches(plain, B, check_steps, seed=1)
    losses = {}
    for label, is_compiled in (("eager", False), ("compiled", True)):
        _, step = arm(plain, tcfg, is_compiled, seed=1)
        losses[label] = [step(x, y) for x, y in check]
    return max(abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses["compiled"])), losses


def main(argv):
    (overrides,), opts = parse_overrides(argv, ModelConfig, extra={
        "rounds": int, "steps": int, "check_steps": int, "batch_size": int})
    opts = {"rounds": 4, "steps": 5, "check_steps": 50, "batch_size": 32, **opts}
    cfg = ModelConfig(**overrides)
    tcfg = TrainConfig()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {opts['batch_size']} x "
          f"{cfg.max_seq_len}; {opts['rounds']} alternating rounds of {opts['steps']} steps")
    results = {}
    for name, c in (("baseline", replace(cfg, fs_periods=0)), ("FutureFormer", copy.deepcopy(cfg))):
        results[name] = measure(name, c, tcfg, opts["batch_size"], opts["rounds"], opts["steps"],
                                opts["check_steps"])
    worth = all(r["speedup"] >= 1.10 and r["max_rel_diff"] < 1e-3 for r in results.values())  # nan: unchecked
    print("decision rule (>= 1.10x and losses within 1e-3 for both): "
          + ("met: compile by default on a CPU" if worth else "not met: keep eager on a CPU"))
    return results


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ValueError as e:
        sys.exit(f"error: {e}")
