"""Several processes, one run: PyTorch's own distributed stack, started by torchrun.

    torchrun --standalone --nproc_per_node=2 train.py --data_path=... --model_name=NAME

torchrun starts one process per rank and tells each its RANK, WORLD_SIZE and LOCAL_RANK (and where to meet,
MASTER_ADDR / MASTER_PORT) in the environment; `Dist.from_env()` joins them into a process group (gloo on a
CPU, nccl on CUDA). Without torchrun there is one process and every method here is a no-op, so `python
train.py` and `train()` in a notebook run exactly as before.
"""

import os

import torch
import torch.distributed as tdist


class Dist:
    """This process's place in the run: rank (0 = the one that writes), world (processes), local_rank (its
    GPU on this machine). `started` says whether from_env created the process group (and `close` ends it)."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, started: bool = False):
        self.rank, self.world, self.local_rank, self.started = rank, world, local_rank, started

    @classmethod
    def from_env(cls, device: str) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        started = False
        if not tdist.is_initialized():
            if device == "cuda":
                torch.cuda.set_device(local_rank)
            tdist.init_process_group("nccl" if device == "cuda" else "gloo")
            started = True
        return cls(rank, world, local_rank, started)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values):
        """Each of `values` (floats) summed over the processes."""
        if not self.active:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64)
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.all_reduce(t)
        return t.cpu().tolist()

    def any(self, *flags: bool) -> list[bool]:
        """For each of `flags`, whether it is true in any process (so that all stop together): one exchange."""
        return [bool(v) for v in (self.sum([float(f) for f in flags]) if self.active else flags)]

    def gather(self, obj) -> list:
        """`obj` of every process, in rank order, in every process."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def close(self) -> None:
        if self.started and tdist.is_initialized():
            tdist.destroy_process_group()
            self.started = False
