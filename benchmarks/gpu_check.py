"""A prepared check of the CUDA paths: bf16 autocast, torch.compile and SDPA's flash kernel, on a ~25M-parameter
FutureFormer trained a few hundred steps on the TinyStories sample.

    python benchmarks/gpu_check.py                       # on a CUDA machine: the full check
    python benchmarks/gpu_check.py --tiny --steps=20     # anywhere: the same code on a tiny model (the tests)

It prints:
  - which attention kernel SDPA can use for the model's self-attention (flash on a GPU that has it);
  - tokens/s of the training step in bf16 autocast (compiled unless --compile=false), and its FLOP/s
    (modules/flops.py) as a share of a bf16 matmul peak measured in the same run (and of the card's datasheet
    peak when the card is in DATASHEET_BF16);
  - the peak memory the training took;
  - whether the bf16 run's loss tracks an fp32 run of the same start and batches: the largest relative gap of
    their losses averaged over the last quarter of the steps must stay under --tolerance (default 2%).
On a CPU the same steps run (bf16 autocast on the CPU), so the suite tests everything but the device itself.
"""

import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools  # noqa: E402
from config import ModelConfig, TrainConfig, parse_overrides  # noqa: E402
from modules.flops import flops_per_token  # noqa: E402
from modules.model import Model  # noqa: E402
from optimizer import make_optimizer  # noqa: E402

# dense bf16 tensor-core peaks from the vendors' datasheets, TFLOP/s (no sparsity)
DATASHEET_BF16 = {"H200": 989, "H100": 989, "A100": 312, "L40S": 362, "L4": 121, "A10G": 70, "RTX 4090": 165,
                  "RTX 3090": 71, "V100": 0}
FULL = dict(dim=512, num_layers=8, num_q_heads=8, num_kv_heads=2, max_seq_len=256)   # about 25M parameters
TINY = dict(dim=32, num_layers=3, num_q_heads=2, num_kv_heads=1, max_seq_len=32, fs_periods=2)


def bf16_peak(device: str, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    best = float("inf")
    for _ in range(4):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def attention_kernel(cfg, device: str) -> str:
    """Which SDPA kernel the self-attention's call (causal, grouped heads) can use here: flash, efficient or math."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    hd = cfg.dim // cfg.num_q_heads
    q = torch.randn(2, cfg.num_q_heads, 64, hd, device=device, dtype=torch.bfloat16)
    k = torch.randn(2, cfg.num_kv_heads, 64, hd, device=device, dtype=torch.bfloat16)
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("math", SDPBackend.MATH)):
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            return name
        except RuntimeError:
            continue
    return "none"


def run(cfg, data, device, steps, batch_size, bf16: bool, compile_model: bool):
    """Train `steps` steps from seed 0; returns (losses, seconds per step of the second half, compile seconds)."""
    torch.manual_seed(0)
    model = Model(cfg).to(device).train()
    opt = make_optimizer(model, TrainConfig(), device)
    for group in opt.param_groups:
        group["lr"] = 1e-3
    step_model = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(0)
    losses, times, first = [], [], 0.0
    for i in range(steps):
        x, y = tools.get_batch(data, "train", batch_size, cfg.max_seq_len, cfg.lookahead, gen)
        x, y = x.to(device), y.to(device)
        t0 = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            _, loss = step_model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(model.loss_parts["ntp_loss"]))  # float() waits for the device
        (times.append if i >= steps // 2 else lambda t: None)(time.perf_counter() - t0)
        if i == 0:
            first = time.perf_counter() - t0
    return losses, sum(times) / max(len(times), 1), first


def main(argv):
    (overrides,), opts = parse_overrides(argv, ModelConfig, extra={
        "tiny": bool, "steps": int, "batch_size": int, "compile": bool, "tolerance": float, "device": str})
    device = tools.pick_device(opts.get("device", "auto"))
    tiny = opts.get("tiny", device != "cuda")
    steps = opts.get("steps", 300 if not tiny else 20)
    batch_size = opts.get("batch_size", 32 if not tiny else 4)
    compile_model = opts.get("compile", device == "cuda")
    cfg = ModelConfig(**{**(TINY if tiny else FULL), **overrides})
    data = tools.get_data(cfg, TrainConfig(data_path=tools.SAMPLE_PATH, val_data_path=tools.VALID_SAMPLE_PATH))
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}; {sum(p.numel() for p in Model(cfg).parameters()) / 1e6:.1f}M "
          f"parameters, {steps} steps of {batch_size} x {cfg.max_seq_len}, compile={compile_model}")
    print(f"self-attention kernel available to SDPA: {attention_kernel(cfg, device)}")
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    bf16_losses, step_s, first_s = run(cfg, data, device, steps, batch_size, True, compile_model)
    memory = torch.cuda.max_memory_allocated() / 2 ** 30 if device == "cuda" else float("nan")
    tokens_s = batch_size * cfg.max_seq_len / step_s
    achieved = tokens_s * flops_per_token(cfg)
    peak = bf16_peak(device, 8192 if device == "cuda" else 512)
    sheet = next((v for k, v in DATASHEET_BF16.items() if k in name and v), None)
    print(f"bf16 training: {tokens_s:,.0f} tokens/s ({step_s * 1e3:.1f} ms/step; first step {first_s:.1f} s"
          f"{', compiling' if compile_model else ''}), {achieved / 1e12:.2f} TFLOP/s = {achieved / peak:.1%} of "
          f"the bf16 matmul peak measured here ({peak / 1e12:.1f} TFLOP/s)"
          + (f", {achieved / (sheet * 1e12):.1%} of the datasheet's {sheet} TFLOP/s" if sheet else ""))
    print(f"peak memory: {memory:.2f} GiB" if device == "cuda" else "peak memory: (CUDA only)")
    fp32_losses, _, _ = run(cfg, data, device, steps, batch_size, False, compile_model)
    tail = max(1, steps // 4)
    a, b = sum(bf16_losses[-tail:]) / tail, sum(fp32_losses[-tail:]) / tail
    gap = abs(a - b) / b
    tolerance = opts.get("tolerance", 0.02)
    print(f"loss over the last {tail} steps: bf16 {a:.4f}, fp32 {b:.4f}: {gap:.2%} apart "
          f"({'within' if gap <= tolerance else 'OUTSIDE'} the {tolerance:.0%} tolerance)")
    return gap <= tolerance


if __name__ == "__main__":
    try:
        sys.exit(0 if main(sys.argv[1:]) else 1)
    except ValueError as e:
        sys.exit(f"error: {e}")
