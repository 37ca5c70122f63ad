"""Attention: multi-query / grouped-query / multi-head self-attention with rotary positions and a KV
cache, and cross-attention over the model's own predictions of the future (the "future memory").

Legend: B batch, T time (queries), S keys' time, D model dim, Hq query heads, Hkv key/value heads,
G = Hq // Hkv queries per key head, hd head dim, C vectors per future chunk, N keys per query.

No dropout on attention weights: on a CPU it forces SDPA's slow path and doubled the training step
(measured); dropout acts on the residual branches instead (modules/layer.py).

Rotary encodings use real arithmetic (cos/sin of position x frequency), computed from the positions
themselves: no complex numbers (Apple's MPS has no complex64) and no table that positions could run
past (cross-attention keys sit at future positions, beyond max_seq_len).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io


def rope_tables(pos, half: int, theta: float):
    """cos and sin of the rotation angles pos * theta^(-i/half), i < half: (..., half) each."""
    freqs = theta ** (-torch.arange(half, device=pos.device, dtype=torch.float32) / half)  # (hd/2,)
    angles = pos.to(torch.float32).unsqueeze(-1) * freqs                                 # (..., hd/2)
    return angles.cos(), angles.sin()


_TABLES: dict = {}


def rope_range_tables(pos0: int, T: int, half: int, theta: float, device):
    """rope_tables of positions pos0 .. pos0 + T - 1, (T, half) each, kept for reuse: every self-attention
    layer of a forward pass rotates the same positions (and training always the same 0 .. T - 1), so
    they are computed once rather than twice per layer. Made outside inference mode, so that tables made
    while generating can later be saved for backward by training."""
    key = (pos0, T, half, float(theta), str(device))
    tables = _TABLES.get(key)
    if tables is None:
        if len(_TABLES) > 256:  # decoding visits one position after another: keep the memory bounded
            _TABLES.clear()
        with torch.inference_mode(False), torch.no_grad():
            tables = _TABLES[key] = rope_tables(torch.arange(pos0, pos0 + T, device=device), half, theta)
    return tables


def rope(x, pos=None, theta: float = 10_000.0, tables=None):
    """Rotate pairs (x[i], x[i + hd/2]) of the last dim by angle pos * theta^(-2i/hd).

    x: (..., hd); pos: integer positions broadcastable to x.shape[:-1], or instead `tables`, the
    (cos, sin) of rope_tables, broadcastable to (..., hd/2). https://arxiv.org/abs/2104.09864
    """
    half = x.shape[-1] // 2
    cos, sin = tables if tables is not None else rope_tables(pos, half, theta)
    x1, x2 = x.float().split(half, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x)


class KVCache:
    """Keys and values seen so far by one attention module, grown along `dim` at each call."""

    def __init__(self, dim: int):
        self.dim, self.k, self.v = dim, None, None

    def update(self, k, v):
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=self.dim), torch.cat([self.v, v], dim=self.dim)
        self.k, self.v = k, v
        return k, v


class Cache:
    """Incremental-decoding state of a whole model: the position reached and one KVCache per attention
    module (cross-attention keeps one per future scale). Make one with `Model.new_cache()`; every
    forward call with it appends its tokens."""

    def __init__(self):
        self.pos = 0
        self._slots = {}

    def __repr__(self):
        return f"Cache(pos={self.pos}, {len(self._slots)} KV slots)"

    def slot(self, key, dim: int) -> KVCache:
        if key not in self._slots:
            self._slots[key] = KVCache(dim)
        return self._slots[key]


class SelfAttention(LoggingModule):
    def __init__(self, dim: int, num_q_heads: int, num_kv_heads: int, head_dim: int, theta: float):
        super().__init__()
        self.Hq, self.Hkv, self.hd, self.theta = num_q_heads, num_kv_heads, head_dim, theta
        self.Wqkv = nn.Linear(dim, (num_q_heads + 2 * num_kv_heads) * head_dim, bias=False)  # q, k, v: one matmul
        self.Wo = nn.Linear(num_q_heads * head_dim, dim, bias=False)

    @log_io
    def forward(self, x, pos0: int = 0, cache: Cache | None = None):
        """x: (B, T, D) at positions pos0 .. pos0 + T - 1; with a cache, earlier positions are in it."""
        B, T, _ = x.shape
        qkv = self.Wqkv(x).view(B, T, self.Hq + 2 * self.Hkv, self.hd).transpose(1, 2)    # (B, Hq + 2Hkv, T, hd)
        tables = rope_range_tables(pos0, T, self.hd // 2, self.theta, x.device)               # (T, hd/2) x 2
        qk = rope(qkv[:, :self.Hq + self.Hkv], tables=tables)      # queries and keys rotated together
        q, k, v = qk[:, :self.Hq], qk[:, self.Hq:], qkv[:, self.Hq + self.Hkv:]             # (B, H.., T, hd)
        if cache is not None:
            k, v = cache.slot(self, dim=2).update(k, v)                                        # (B, Hkv, S, hd)
        S = k.shape[2]
        # is_causal aligns the mask top-left, right only for a square score matrix; a chunk of new queries
        # after cached keys needs the mask written out (bottom-right aligned), and a single query none.
        mask = None
        if S != T and T > 1:
            mask = torch.arange(S, device=x.device) <= (S - T + torch.arange(T, device=x.device))[:, None]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=(S == T and T > 1),
                                           enable_gqa=self.Hq != self.Hkv)                  # (B, Hq, T, hd)
        return self.Wo(y.transpose(1, 2).reshape(B, T, self.Hq * self.hd))                  # (B, T, D)


@dataclass
class FutureScale:
    """The predictions of one future chunk, made at each of the current call's positions."""
    k: int           # chunk index, 1 = nearest (offsets +2..+3 for fs_mult 2)
    vectors: torch.Tensor  # (B, T, C, D)
    first: int       # first offset of the chunk, a_k
    last: int        # last offset of the chunk, b_k


class CrossAttention(LoggingModule):
    """Queries from the residual stream, keys and values from the future memory.

    `memory_mode` decides which predictions position t may see (all made at positions s <= t):
      'horizon': those whose chunk still reaches past t (s + b_k >= t + 1): a window of b_k positions;
      'causal':  all of them, stale ones included (a full attention over T * C keys per scale);
      'self':    only those made at t itself (a window of 1).
    Keys and values are projected once per prediction (and cached during generation). For the windowed
    modes, queries go in blocks of `BLOCK`: a block of Qb queries shares the Qb + width - 1 key
    positions its windows span, so the scores are a few dense matmuls of O(T * (Qb + width)) — never a
    T x T*C matrix, and no gather whose backward is a slow scatter.
    """

    MODES = ("horizon", "causal", "self")
    BLOCK = 8

    def __init__(self, dim: int, num_q_heads: int, num_kv_heads: int, head_dim: int, theta: float,
                 memory_mode: str, use_rope: bool):
        super().__init__()
        if memory_mode not in self.MODES:
            raise ValueError(f"fs_memory={memory_mode!r} is not allowed: choose one of {list(self.MODES)}")
        self.Hq, self.Hkv, self.hd, self.theta = num_q_heads, num_kv_heads, head_dim, theta
        self.memory_mode, self.use_rope = memory_mode, use_rope
        self.Wq = nn.Linear(dim, num_q_heads * head_dim, bias=False)
        self.Wkv = nn.Linear(dim, 2 * num_kv_heads * head_dim, bias=False)
        self.Wo = nn.Linear(num_q_heads * head_dim, dim, bias=False)

    def _project_memory(self, memory: list[FutureScale], s0: int):
        """Keys and values of all predictions in the memory, made at positions s0, s0 + 1, ...: the scales'
        vectors side by side, (B, T, N, Hkv, hd) with N = sum of C over the scales, in one matmul."""
        vectors = torch.cat([m.vectors for m in memory], dim=2)                           # (B, T, N, D)
        B, T, N, _ = vectors.shape
        k, v = self.Wkv(vectors).view(B, T, N, 2, self.Hkv, self.hd).unbind(3)             # (B, T, N, Hkv, hd)
        if self.use_rope:
            # each key sits at the time its prediction is about: s + a_k (+ the sub-window's start if C > 1)
            ahead = torch.cat([m.first + (m.last - m.first + 1) // m.vectors.shape[2]
                               * torch.arange(m.vectors.shape[2], device=k.device) for m in memory])  # (N,)
            pos = torch.arange(s0, s0 + T, device=k.device)[:, None] + ahead                 # (T, N)
            k = rope(k, pos.unsqueeze(-1), self.theta)
        return k, v

    @log_io
    def forward(self, x, memory: list[FutureScale], pos0: int = 0, cache: Cache | None = None):
        """x: (B, T, D) queries at positions pos0..pos0+T-1; memory: predictions made at those same
        positions (earlier ones come from the cache)."""
        B, T, _ = x.shape
        q = self.Wq(x).view(B, T, self.Hkv, self.Hq // self.Hkv, self.hd)                   # (B, T, Hkv, G, hd)
        if self.use_rope:
            cos, sin = rope_range_tables(pos0, T, self.hd // 2, self.theta, x.device)
            q = rope(q, tables=(cos[:, None, None], sin[:, None, None]))                   # (B, T, Hkv, G, hd)
        k, v = self._project_memory(memory, pos0)
        if cache is not None:
            k, v = cache.slot(self, dim=1).update(k, v)                                     # (B, S, N, Hkv, hd)
        if self.memory_mode == "causal":
            y = self._attend_all(q, k, v, pos0)
        else:  # each scale's key columns, and how far back they reach: b_k (1 for 'self')
            groups, n = [], 0
            for m in memory:
                C = m.vectors.shape[2]
                groups.append((n, C, 1 if self.memory_mode == "self" else m.last))
                n += C
            y = self._attend_windows(q, k, v, groups, pos0)
        return self.Wo(y.reshape(B, T, self.Hq * self.hd))                                  # (B, T, D)

    def _attend_all(self, q, k, v, pos0):
        """'causal': every prediction made at s <= t, with a written-out (T, S*N) mask."""
        B, T = q.shape[:2]
        S, N = k.shape[1], k.shape[2]
        t = torch.arange(pos0, pos0 + T, device=q.device)
        s = torch.arange(pos0 + T - S, pos0 + T, device=q.device).repeat_interleave(N)      # (S*N,)
        k, v = k.flatten(1, 2).transpose(1, 2), v.flatten(1, 2).transpose(1, 2)             # (B, Hkv, S*N, hd)
        y = F.scaled_dot_product_attention(q.flatten(2, 3).transpose(1, 2), k, v, attn_mask=s <= t[:, None],
                                           enable_gqa=self.Hq != self.Hkv)                 # (B, Hq, T, hd)
        return y.transpose(1, 2)                                                            # (B, T, Hq, hd)

    @staticmethod
    def _attend_last(q, k, v, groups):
        """_attend_windows for a single query, the newest position: no blocks and no mask, since every
        one of the last `width` predictions of a scale is in its window (and those never made are not in
        the cache)."""
        B, _, Hkv, G, hd = q.shape
        keys = torch.cat([k[:, -width:, n:n + C].flatten(1, 2) for n, C, width in groups], 1)    # (B, K, Hkv, hd)
        values = torch.cat([v[:, -width:, n:n + C].flatten(1, 2) for n, C, width in groups], 1)  # (B, K, Hkv, hd)
        scores = (q[:, 0] / math.sqrt(hd)) @ keys.permute(0, 2, 3, 1)                           # (B, Hkv, G, K)
        y = scores.softmax(-1) @ values.transpose(1, 2)                                          # (B, Hkv, G, hd)
        return y.reshape(B, 1, Hkv * G, hd)                                                      # (B, 1, Hq, hd)

    @staticmethod
    def _blocks(z, lo: int, pad_end: int, span: int, Qb: int):
        """(B, S, C, Hkv, hd) -> (B, Hkv, nb, span*C, hd): block b holds the keys at indices
        lo + b*Qb .. lo + b*Qb + span - 1 (zeros where those fall outside 0..S-1; the caller masks them)."""
        B, _, C, Hkv, hd = z.shape
        z = F.pad(z[:, max(lo, 0):], (0, 0, 0, 0, 0, 0, max(-lo, 0), pad_end)).unfold(1, span, Qb)
        return z.permute(0, 3, 1, 5, 2, 4).reshape(B, Hkv, z.shape[1], span * C, hd)  # (B, Hkv, nb, span*C, hd)

    def _attend_windows(self, q, k, v, groups, pos0):
        """'horizon' and 'self': query t sees the predictions made at t - width + 1 .. t of each scale.

        groups: (first column, columns, width) of each scale in k and v. Queries go in blocks of Qb;
        for each scale, block b's keys are the span = Qb + width - 1 positions its windows cover, so
        the block's scores are one small dense matmul over the scales' spans side by side."""
        B, T, Hkv, G, hd = q.shape
        S = k.shape[1]
        if T == 1:  # one new token while decoding: its windows are simply the last `width` cached predictions
            return self._attend_last(q, k, v, groups)
        Qb = min(self.BLOCK, T)
        nb = -(-T // Qb)                                                                    # query blocks
        Tp = nb * Qb                                                                        # T padded
        s_start = pos0 + T - S                                       # position of the first cached prediction
        i = torch.arange(Qb, device=q.device)[:, None]                                      # (Qb, 1)
        keys, values, masks = [], [], []
        for n, C, width in groups:
            span = Qb + width - 1
            lo = pos0 - width + 1 - s_start                          # index of the first key any query needs
            keys.append(self._blocks(k[:, :, n:n + C], lo, Tp - T, span, Qb))
            values.append(self._blocks(v[:, :, n:n + C], lo, Tp - T, span, Qb))
            j = torch.arange(span, device=q.device)                                         # (span,)
            s = pos0 - width + 1 + Qb * torch.arange(nb, device=q.device)[:, None, None] + j  # (nb, 1, span)
            ok = (j >= i) & (j <= i + width - 1) & (s >= s_start)    # (nb, Qb, span): in the window, and exists
            masks.append(ok.repeat_interleave(C, -1))                                       # (nb, Qb, span*C)
        qb = F.pad(q, (0, 0, 0, 0, 0, 0, 0, Tp - T)).view(B, nb, Qb, Hkv, G, hd)
        qb = qb.permute(0, 3, 1, 2, 4, 5).reshape(B, Hkv, nb, Qb * G, hd)                   # rows (i, g)
        mask = torch.cat(masks, -1).repeat_interleave(G, 1)                                 # (nb, Qb*G, K)
        scores = (qb / math.sqrt(hd)) @ torch.cat(keys, 3).transpose(-1, -2)                # (B, Hkv, nb, Qb*G, K)
        y = scores.masked_fill_(~mask, float("-inf")).softmax(-1) @ torch.cat(values, 3)   # (B, Hkv, nb, Qb*G, hd)
        y = y.view(B, Hkv, nb, Qb, G, hd).permute(0, 2, 3, 1, 4, 5).reshape(B, Tp, Hkv * G, hd)
        return y[:, :T]                                                                     # (B, T, Hq, hd)
