"""What the machine can do, measured in the benchmark's own run: the fp32 matmul peak that a training step's
achieved FLOP/s is compared with.

    python benchmarks/machine.py [--n=2048] [--repeats=5]
"""

import sys
import time

import torch


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the fastest of `repeats` fp32 (n x n) @ (n x n) products on all of torch's threads (2 n^3 FLOPs
    each): about the most arithmetic this CPU gives PyTorch, the yardstick for a training step's FLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up: threads started, memory touched
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best


if __name__ == "__main__":
    args = dict(a.lstrip("-").split("=", 1) for a in sys.argv[1:])
    peak = matmul_peak(int(args.get("n", 2048)), int(args.get("repeats", 5)))
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s on {torch.get_num_threads()} threads")
