"""Two-layer MLP with a ReLU / GeLU / SiLU nonlinearity and an optional gate (SwiGLU, GeGLU, ReGLU).

A gated MLP has three weight matrices instead of two, so its hidden width is scaled by 2/3 to keep
the parameter count of the ungated one (as in Llama). Adding a nonlinearity = one entry in
NONLINEARITIES.

No dropout inside: the layer drops the MLP's output on the residual branch (nanoGPT's placement). A
dropout on the wide hidden layer too made the default baseline's CPU training step about 25% slower
(measured on a 2-core CPU: 838 vs 659 ms), almost all of it spent drawing random numbers.
"""

import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io

NONLINEARITIES = {"ReLU": F.relu, "GeLU": F.gelu, "SiLU": F.silu}


def hidden_width(dim: int, hidden_mult: float, gated: bool) -> int:
    hidden = int(dim * hidden_mult)
    return max(1, int(2 * hidden / 3)) if gated else hidden


class MLP(LoggingModule):
    def __init__(self, dim: int, hidden_mult: float, nonlinearity: str, gated: bool, bias: bool = False,
                 out_dim: int | None = None):
        super().__init__()
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"mlp_nonlinearity={nonlinearity!r} is not allowed: choose one of "
                             f"{list(NONLINEARITIES)}")
        self.act, self.gated = NONLINEARITIES[nonlinearity], gated
        self.hidden = hidden_width(dim, hidden_mult, gated)
        self.up = nn.Linear(dim, self.hidden * (2 if gated else 1), bias=bias)  # gate and value in one matmul
        self.down = nn.Linear(self.hidden, out_dim or dim, bias=bias)

    @log_io
    def forward(self, x):                               # (B, T, D)
        h = self.up(x)                                  # (B, T, hidden) or (B, T, 2*hidden)
        if self.gated:
            gate, h = h.chunk(2, dim=-1)
            h = self.act(gate) * h                      # (B, T, hidden)
        else:
            h = self.act(h)
        return self.down(h)                             # (B, T, out_dim)
