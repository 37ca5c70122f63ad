"""One residual layer: self-attention, optional cross-attention over the future memory, MLP.

Pre-norm residual branches, x = x + dropout(branch(norm(x))); with `second_resid_norm` each branch's
output is normed again before it is added.
"""

from torch import nn

from modules.logging import LoggingModule, log_io
from modules.mlp import MLP
from modules.mqa import Cache, CrossAttention, FutureScale, SelfAttention
from modules.norm import Norm


class Layer(LoggingModule):
    def __init__(self, cfg, cross_attention: bool = False):
        super().__init__()
        def norm():
            return Norm(cfg.dim, cfg.norm_type, cfg.norm_affine, cfg.norm_bias, cfg.eps)

        def out_norm():
            return norm() if cfg.second_resid_norm else nn.Identity()

        self.attn_norm, self.attn_out_norm = norm(), out_norm()
        self.attn = SelfAttention(cfg.dim, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.theta)
        self.cross_attn = None
        if cross_attention:
            self.ca_norm, self.ca_out_norm = norm(), out_norm()
            self.cross_attn = CrossAttention(cfg.dim, cfg.ca_num_q_heads, cfg.ca_num_kv_heads, cfg.ca_head_dim,
                                             cfg.theta, cfg.fs_memory, cfg.fs_cross_rope)
        self.mlp_norm, self.mlp_out_norm = norm(), out_norm()
        self.mlp = MLP(cfg.dim, cfg.mlp_hidden_mult, cfg.mlp_nonlinearity, cfg.mlp_gated, cfg.mlp_bias)
        self.drop = nn.Dropout(cfg.dropout_rate)

    @log_io
    def forward(self, x, pos0: int = 0, cache: Cache | None = None, memory: list[FutureScale] | None = None):
        """memory: the future-sight predictions so far, already normed (Model.memory_norm)."""
        x = x + self.drop(self.attn_out_norm(self.attn(self.attn_norm(x), pos0, cache)))       # (B, T, D)
        if self.cross_attn is not None:
            x = x + self.drop(self.ca_out_norm(self.cross_attn(self.ca_norm(x), memory, pos0, cache)))
        return x + self.drop(self.mlp_out_norm(self.mlp(self.mlp_norm(x))))                    # (B, T, D)
