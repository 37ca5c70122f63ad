"""Pooling a future chunk of token embeddings into the C vectors the model must predict.

Legend: L tokens in the chunk, C vectors it is compressed into, W = L // C tokens per sub-window,
D model dim, `...` any leading dims (batch, time).

Every pool type maps (..., L, D) -> (..., C, D), pooling C equal consecutive sub-windows. sum, mean
and max have no parameters; the others are learned, so they only make sense when the targets are
not detached (`fs_detach_targets=False`; config.py rejects the other pairing).
"""

import math

import torch
from torch import nn

from modules.logging import LoggingModule, log_io


def compression(compress_freq: str, n: float, i: int) -> int:
    """How many vectors chunk index i (0 = nearest chunk) is compressed into (docs/design.md §1)."""
    if compress_freq == "constant":
        return math.floor(n)
    if compress_freq == "linear":
        return math.floor(n * i + 1)
    if compress_freq == "root":
        return math.floor((i + 1) ** (1 / n) + 1e-9)
    if compress_freq == "log":
        return math.floor(math.log(i + 1, n) + 1e-9) + 1
    if compress_freq == "poly":
        return math.floor((i + 1) ** n + 1e-9)
    raise ValueError(f"compress_freq={compress_freq!r} is not allowed: choose one of "
                     "['constant', 'linear', 'root', 'log', 'poly']")


class Pooler(LoggingModule):
    def __init__(self, pool_type: str, dim: int, length: int, num_vectors: int, output_linear: bool = False,
                 bias: bool = False):
        super().__init__()
        if length % num_vectors:
            raise ValueError(f"a chunk of {length} tokens cannot be cut into {num_vectors} equal sub-windows")
        self.pool_type, self.C, self.W = pool_type, num_vectors, length // num_vectors
        W = self.W
        if pool_type == "parametric_sum":      # a learned weight per position of the sub-window
            self.weight = nn.Parameter(torch.ones(W, 1))
        elif pool_type == "parametric_max":    # a learned per-position, per-channel scale, then max
            self.weight = nn.Parameter(torch.ones(W, dim))
        elif pool_type == "flatten":           # concatenate the sub-window, project back to D
            self.proj = nn.Linear(W * dim, dim, bias=bias)
        elif pool_type == "conv":              # depthwise convolution with kernel = stride = W
            self.weight = nn.Parameter(torch.full((W, dim), 1.0 / W))
            self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        elif pool_type == "attention":         # one learned query per sub-window
            self.query = nn.Parameter(torch.randn(num_vectors, dim) / math.sqrt(dim))
            self.key = nn.Linear(dim, dim, bias=bias)
        elif pool_type == "self_attention":    # the query is computed from the sub-window itself
            self.query = nn.Linear(dim, dim, bias=bias)
            self.key = nn.Linear(dim, dim, bias=bias)
        elif pool_type not in ("sum", "mean", "max"):
            raise ValueError(f"pool_type={pool_type!r} is not allowed: choose one of ['sum', 'mean', 'max', "
                             "'parametric_sum', 'parametric_max', 'flatten', 'conv', 'attention', "
                             "'self_attention']")
        self.out = nn.Linear(dim, dim, bias=bias) if output_linear else None

    @log_io
    def forward(self, x):                                            # (..., L, D)
        x = x.unflatten(-2, (self.C, self.W))                        # (..., C, W, D)
        p = self.pool_type
        if p == "sum":
            y = x.sum(-2)
        elif p == "mean":
            y = x.mean(-2)
        elif p == "max":
            y = x.amax(-2)
        elif p == "parametric_sum":
            y = (x * self.weight).sum(-2)
        elif p == "parametric_max":
            y = (x * self.weight).amax(-2)
        elif p == "flatten":
            y = self.proj(x.flatten(-2))
        elif p == "conv":
            y = (x * self.weight).sum(-2) + (0 if self.bias is None else self.bias)
        else:
            q = self.query if p == "attention" else self.query(x.mean(-2))     # (C, D) or (..., C, D)
            scores = (self.key(x) * q.unsqueeze(-2)).sum(-1) / math.sqrt(x.shape[-1])  # (..., C, W)
            y = (scores.softmax(-1).unsqueeze(-1) * x).sum(-2)
        return y if self.out is None else self.out(y)                # (..., C, D)
