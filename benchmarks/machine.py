"""What the machine can do, measured in the benchmark's own run: the fp32 and bf16 matmul peaks that a training
step's achieved FLOP/s are compared with, and the CPU they ran on.

    python benchmarks/machine.py [--n=2048] [--repeats=5]
"""

import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import tools  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 5, dtype=torch.float32) -> float:
    """FLOP/s of the fastest of `repeats` (n x n) @ (n x n) products in `dtype` on all of torch's threads (2 n^3
    FLOPs each): about the most arithmetic this CPU gives PyTorch in that type, the yardstick for a training step's
    FLOP/s (bf16: what autocast's matmuls can reach; without bf16 units oneDNN emulates it, slower than fp32)."""
    import time

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up: threads started, memory touched
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


def cpu_name() -> str:
    """The CPU's model name and bf16 units (tools.machine_name), its cores and torch's thread count."""
    return f"{tools.machine_name('cpu')}, {os.cpu_count()} cores, torch {torch.__version__} on " \
           f"{torch.get_num_threads()} threads"


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    n, repeats = int(args.get("n", 2048)), int(args.get("repeats", 5))
    print(cpu_name())
    for dtype in (torch.float32, torch.bfloat16):
        peak = matmul_peak(n, repeats, dtype)
        print(f"{str(dtype).removeprefix('torch.')} matmul peak: {peak / 1e9:.1f} GFLOP/s")
