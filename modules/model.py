"""The FutureFormer: a Llama-style GPT that predicts the future at lower and lower resolution the
further out it looks, and cross-attends to those predictions before writing the next token.

Legend: B batch, T time, D dim, V vocab_size (vocab_len + bos, eos, pad), P fs_periods (future
chunks = future-sight layers), C vectors per chunk.

    tokens -> embed -> body layers (num_layers - P)
           -> for each future-sight layer: predict a chunk (staggered: furthest first), add it to the
              memory, then self-attention -> cross-attention over the memory -> MLP (or the two side by
              side, or one joint attention: fs_attention)
           -> final norm -> output projection -> next-token logits

With fs_periods = 0 it is a plain GPT with no future-sight parameters at all: the baseline.
The memory holds the model's own predictions, never the real future tokens, so logits at t depend
only on tokens 0..t, and generation computes exactly what training computed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from modules.layer import Layer
from modules.logging import LoggingModule, log_io
from modules.loss import Loss
from modules.mlp import MLP
from modules.mqa import Cache, FutureScale, StaticCache, project_memory
from modules.norm import Norm


class FutureHead(LoggingModule):
    """Multi-scale output layer for one chunk: (B, T, D) -> (B, T, C, D).

    'linear': norm -> linear; 'mlp': norm -> MLP; 'layer': a full transformer layer (with its own
    causal self-attention and KV cache) -> norm -> linear. fs_head_norm=False leaves out the norm."""

    def __init__(self, cfg, num_vectors: int):
        super().__init__()
        self.C = num_vectors
        self.layer = Layer(cfg) if cfg.fs_output_layer == "layer" else None
        # fs_head_norm=False saves a norm: a linear head's input scale only scales the prediction, which the
        # memory's norm and a cosine loss ignore (a learned per-channel scale is then the projection's to learn)
        self.norm = Norm(cfg.dim, cfg.norm_type, cfg.norm_affine, cfg.norm_bias, cfg.eps) if cfg.fs_head_norm else None
        if cfg.fs_output_layer == "mlp":
            self.proj = MLP(cfg.dim, cfg.mlp_hidden_mult, cfg.mlp_nonlinearity, cfg.mlp_gated, cfg.mlp_bias,
                            out_dim=num_vectors * cfg.dim)
        else:
            self.proj = nn.Linear(cfg.dim, num_vectors * cfg.dim, bias=False)

    @log_io
    def forward(self, x, pos0: int = 0, cache: Cache | None = None):
        if self.layer is not None:
            x = self.layer(x, pos0, cache)
        if self.norm is not None:
            x = self.norm(x)
        return self.proj(x).unflatten(-1, (self.C, x.shape[-1]))             # (B, T, C, D)


class Model(LoggingModule):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        P = cfg.fs_periods
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout_rate)
        self.body = nn.ModuleList(Layer(cfg) for _ in range(cfg.num_layers - P))
        self.fs_layers = nn.ModuleList(Layer(cfg, cross_attention=True) for _ in range(P))
        self.heads = nn.ModuleList(FutureHead(cfg, c) for c in cfg.chunk_vectors)  # heads[k - 1] predicts chunk k
        # predictions are normed once as they enter the memory (the loss sees them raw)
        self.memory_norm = Norm(cfg.dim, cfg.norm_type, cfg.norm_affine, cfg.norm_bias, cfg.eps) if P else None
        # fs_shared_memory_kv: keys and values of each prediction projected once, here, for every layer that reads it
        self.memory_kv = (nn.Linear(cfg.dim, 2 * cfg.ca_num_kv_heads * cfg.ca_head_dim, bias=False)
                          if P and cfg.fs_shared_memory_kv else None)
        self.final_norm = Norm(cfg.dim, cfg.norm_type, cfg.norm_affine, cfg.norm_bias, cfg.eps)
        self.output = None if cfg.weight_tying else nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        self.loss_fn = Loss(cfg)
        self.loss_parts: dict = {}  # the last loss's parts, detached 0-d tensors (ntp_loss, fs_loss_k, ...)
        self.future: dict = {}      # the last forward's chunk predictions {k: (B, T, C, D)}, for inspection
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # residual-branch outputs start small (GPT-2)
            if name.endswith(("Wo.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.num_layers))

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def new_cache(self, static: bool = False) -> Cache:
        """State for incremental decoding: pass it to every forward call, which appends its tokens. `static`: in
        buffers preallocated for max_seq_len positions, for a compiled decoding step (mqa.StaticCache)."""
        if static:
            return StaticCache(self.cfg.max_seq_len, next(self.parameters()).device)
        return Cache()

    def logits(self, x):
        """Final-norm-ed residual (..., D) -> vocabulary logits (..., V)."""
        return F.linear(x, self.embedding.weight) if self.output is None else self.output(x)

    def _predict(self, k: int, x, pos0, cache, preds: dict) -> FutureScale:
        """Predict chunk k (raw, into preds, for the loss) and return it normed, for the memory (with its keys
        and values of every position so far, when the layers share them)."""
        cfg = self.cfg
        first, last = cfg.chunk_offsets[k - 1]
        preds[k] = self.heads[k - 1](x, pos0, cache)                                # (B, T, C, D)
        scale = FutureScale(k, self.memory_norm(preds[k]), first, last)
        if self.memory_kv is not None:
            kv = project_memory(self.memory_kv, [scale], pos0, cfg.ca_num_kv_heads, cfg.ca_head_dim, cfg.theta,
                                cfg.fs_cross_rope, cache.length if cache is not None and cache.static else None)
            scale.kv = kv if cache is None else cache.slot(("memory", k), dim=1).update(*kv)
        return scale

    @log_io
    def forward(self, input_token_ids, target_token_ids=None, cache: Cache | None = None):
        """input_token_ids: (B, T). target_token_ids: (B, >= T), column i the token after input i, the
        extra columns the future chunks' look-ahead. With a cache, the tokens continue what it holds.
        Returns (logits (B, T, V), loss or None)."""
        B, T = input_token_ids.shape
        pos0 = cache.pos if cache is not None else 0   # a StaticCache's is a tensor: the decoder keeps it in range
        if not torch.is_tensor(pos0) and pos0 + T > self.cfg.max_seq_len:
            raise ValueError(f"{pos0 + T} tokens do not fit in max_seq_len={self.cfg.max_seq_len}; generation "
                             "slides its window (inference.generate) instead of passing more")
        x = self.embedding(input_token_ids)                                        # (B, T, D)
        if self.cfg.scale_first_resid:
            x = x * math.sqrt(self.cfg.dim)
        x = self.drop(x)
        for layer in self.body:
            x = layer(x, pos0, cache)
        P, preds = self.cfg.fs_periods, {}
        if self.cfg.fs_arrangement == "parallel":
            memory = [self._predict(k, x, pos0, cache, preds) for k in range(P, 0, -1)]
        else:
            memory = []
        for j, layer in enumerate(self.fs_layers):
            if self.cfg.fs_arrangement == "staggered":  # furthest chunk first, coarse to fine
                memory.append(self._predict(P - j, x, pos0, cache, preds))
            x = layer(x, pos0, cache, memory)
        logits = self.logits(self.final_norm(x))                                   # (B, T, V)
        self.future = {k: v.detach() for k, v in preds.items()}
        if cache is not None:
            cache.advance(T)
        if target_token_ids is None:
            return logits, None
        if target_token_ids.shape[0] != B or target_token_ids.shape[1] < T:
            raise ValueError(f"target_token_ids of shape {tuple(target_token_ids.shape)} do not fit inputs of shape "
                             f"{(B, T)}: need ({B}, >= {T}) columns, column i the token after input i "
                             f"(and {self.cfg.lookahead - 1} look-ahead columns for every chunk to count)")
        loss, self.loss_parts = self.loss_fn(logits, preds, target_token_ids, self.embedding,
                                             to_logits=lambda v: self.logits(self.final_norm(v)))
        return logits, loss
