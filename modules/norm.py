"""Normalisation: RMSNorm, LayerNorm or CosineNorm, with an optional learned scale (and shift).

Adding a norm = one function in NORMS. Statistics are computed in float32, so bf16 training is safe.
"""

import torch
import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io


def rms_norm(x, eps):  # https://arxiv.org/abs/1910.07467
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def layer_norm(x, eps):
    x = x - x.mean(-1, keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def cosine_norm(x, eps):  # https://arxiv.org/abs/1702.05870: unit length, so dot products are cosines
    return x * torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps)


NORMS = {"RMSNorm": rms_norm, "LayerNorm": layer_norm, "CosineNorm": cosine_norm}


class Norm(LoggingModule):
    def __init__(self, dim: int, norm_type: str, affine: bool = True, bias: bool = False, eps: float = 1e-6):
        super().__init__()
        if norm_type not in NORMS:
            raise ValueError(f"norm_type={norm_type!r} is not allowed: choose one of {list(NORMS)}")
        self.norm_type, self.eps = norm_type, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and bias else None

    @log_io
    def forward(self, x):
        if self.norm_type == "RMSNorm" and self.bias is None and x.dtype == torch.float32:
            # one fused op, the same numbers and gradients bit for bit in fp32 (tested): a cached decoding step
            # calls 22 norms on single vectors, where eight small ops cost 19 us and this one 11 us (measured)
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        y = NORMS[self.norm_type](x.float(), self.eps).type_as(x)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y
