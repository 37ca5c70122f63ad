"""One residual layer: self-attention, optional cross-attention over the future memory, MLP.

Pre-norm residual branches, x = x + dropout(branch(norm(x))); with `second_resid_norm` each branch's
output is normed again before it is added. A future-sight layer reads the memory as `fs_attention` says:
'sequential' self-attention, then cross-attention with its own norm and residual; 'parallel' the two side
by side from one norm, added to the residual together; 'joint' one attention, one softmax over tokens and
predictions; 'dual' self-attention's queries read the memory too, under a softmax of its own.
"""

from torch import nn

from modules.logging import LoggingModule, log_io
from modules.mlp import MLP
from modules.mqa import Cache, CrossAttention, DualAttention, FutureScale, JointAttention, SelfAttention
from modules.norm import Norm


def _same(x):
    return x


class Layer(LoggingModule):
    def __init__(self, cfg, cross_attention: bool = False):
        super().__init__()
        def norm():
            return Norm(cfg.dim, cfg.norm_type, cfg.norm_affine, cfg.norm_bias, cfg.eps)

        def out_norm():
            return norm() if cfg.second_resid_norm else nn.Identity()

        self.fs_attention = cfg.fs_attention if cross_attention else None
        self.attn_norm, self.attn_out_norm = norm(), out_norm()
        if self.fs_attention in ("joint", "dual"):
            self.attn = {"joint": JointAttention, "dual": DualAttention}[self.fs_attention](
                cfg.dim, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.theta, cfg.fs_memory, cfg.fs_cross_rope,
                cfg.fs_shared_memory_kv)
        else:
            self.attn = SelfAttention(cfg.dim, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim, cfg.theta)
        self.cross_attn = None
        if self.fs_attention in ("sequential", "parallel"):
            if self.fs_attention == "sequential":
                self.ca_norm = norm()
            self.ca_out_norm = out_norm()
            self.cross_attn = CrossAttention(cfg.dim, cfg.ca_num_q_heads, cfg.ca_num_kv_heads, cfg.ca_head_dim,
                                             cfg.theta, cfg.fs_memory, cfg.fs_cross_rope, cfg.fs_shared_memory_kv)
        self.mlp_norm, self.mlp_out_norm = norm(), out_norm()
        self.mlp = MLP(cfg.dim, cfg.mlp_hidden_mult, cfg.mlp_nonlinearity, cfg.mlp_gated, cfg.mlp_bias)
        self.drop = nn.Dropout(cfg.dropout_rate)

    @log_io
    def forward(self, x, pos0: int = 0, cache: Cache | None = None, memory: list[FutureScale] | None = None):
        """memory: the future-sight predictions so far, already normed (Model.memory_norm)."""
        drop = self.drop if self.training else _same  # eval: no dropout calls (4-7% of a decoding step)
        h = self.attn_norm(x)                                                                  # (B, T, D)
        if self.fs_attention in ("joint", "dual"):  # one attention module reads the tokens and the predictions
            y = self.attn_out_norm(self.attn(h, memory, pos0, cache))
        else:
            y = self.attn_out_norm(self.attn(h, pos0, cache))
        if self.fs_attention == "parallel":  # cross-attention beside self-attention, from the same norm
            y = y + self.ca_out_norm(self.cross_attn(h, memory, pos0, cache))
        x = x + drop(y)                                                                        # (B, T, D)
        if self.fs_attention == "sequential":  # cross-attention after it, with its own norm and residual
            x = x + drop(self.ca_out_norm(self.cross_attn(self.ca_norm(x), memory, pos0, cache)))
        return x + drop(self.mlp_out_norm(self.mlp(self.mlp_norm(x))))                         # (B, T, D)
