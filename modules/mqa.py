"""Attention: multi-query / grouped-query / multi-head self-attention with rotary positions and a KV
cache, and cross-attention over the model's own predictions of the future (the "future memory").

Legend: B batch, T time (queries), S keys' time, D model dim, Hq query heads, Hkv key/value heads,
G = Hq // Hkv queries per key head, hd head dim, C vectors per future chunk, N keys per query.

No dropout on attention weights: on a CPU it forces SDPA's slow path and doubled the training step
(measured); dropout acts on the residual branches instead (modules/layer.py).

Rotary encodings use real arithmetic (cos/sin of position x frequency): no complex numbers (Apple's MPS
has no complex64), and a table of positions that grows when a position runs past it (cross-attention keys
sit at future positions, beyond max_seq_len).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modules.logging import LoggingModule, log_io


def rope_tables(pos, half: int, theta: float):
    """The (cos, sin) that `rope` multiplies by, (..., 2 * half) each, of the angles pos * theta^(-i/half), i < half:
    cos twice, and sin with its first half negated, so that a rotation is two products and a sum."""
    freqs = theta ** (-torch.arange(half, device=pos.device, dtype=torch.float32) / half)  # (hd/2,)
    angles = pos.to(torch.float32).unsqueeze(-1) * freqs                                 # (..., hd/2)
    cos, sin = angles.cos(), angles.sin()
    return torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)                         # (..., hd) x 2


_TABLES: dict = {}


def rope_range_tables(pos0, T: int, half: int, theta: float, device, ahead: tuple | None = None,
                      upto: int | None = None):
    """rope_tables of positions pos0 .. pos0 + T - 1, (T, hd) each; with `ahead`, a tuple of N offsets, of
    positions t + a for each t and a, (T, N, 1, hd) each (the future memory's keys, one key-head axis).

    Read from one table of positions 0 .. L - 1 per head size and base, made once and grown by doubling: a
    decoding step then rotates by slicing it, not by computing cos and sin again in every layer, and every
    path reads the same numbers. Made outside inference mode, so that a table made while generating can
    later be saved for backward by training.

    A StaticCache's position is a 0-d tensor: `upto`, its length, then bounds pos0 + T, and the table is read by
    index (a compiled step's shapes do not depend on the position)."""
    static = torch.is_tensor(pos0)
    key, n = (half, float(theta), str(device)), (upto if static else pos0 + T) + (max(ahead) if ahead else 0)
    table = _TABLES.get(key)
    # a compiled decoding step never grows it: its eager prefill made the table for every position first
    if (table is None or table[0].shape[0] < n) and not (static and torch.compiler.is_compiling()):
        with torch.inference_mode(False), torch.no_grad():
            L = max(n, 512, 2 * table[0].shape[0] if table is not None else 0)
            table = _TABLES[key] = rope_tables(torch.arange(L, device=device), half, theta)  # (L, hd) x 2
    if ahead is None:
        if static:
            pos = pos0 + torch.arange(T, device=device)                                  # (T,)
            return table[0][pos], table[1][pos]                                          # (T, hd) x 2
        return table[0][pos0:pos0 + T], table[1][pos0:pos0 + T]                          # (T, hd) x 2
    pos = (pos0 + torch.arange(T, device=device) if static else torch.arange(pos0, pos0 + T, device=device))
    pos = pos[:, None] + torch.tensor(ahead, device=device)                              # (T, N)
    return table[0][pos].unsqueeze(-2), table[1][pos].unsqueeze(-2)                      # (T, N, 1, hd) x 2


def rope(x, pos=None, theta: float = 10_000.0, tables=None):
    """Rotate pairs (x[i], x[i + hd/2]) of the last dim by angle pos * theta^(-2i/hd).

    x: (..., hd); pos: integer positions broadcastable to x.shape[:-1], or instead `tables`, the
    (cos, sin) of rope_tables, broadcastable to (..., hd). https://arxiv.org/abs/2104.09864
    As x * [cos, cos] + [x2, x1] * [-sin, sin]: four operations, not eight (half a decoding step's rope time,
    measured), and the very same numbers as [x1 cos - x2 sin, x1 sin + x2 cos]. Computed in float32.
    """
    cos, sin = tables if tables is not None else rope_tables(pos, x.shape[-1] // 2, theta)
    y = x * cos + x.roll(x.shape[-1] // 2, -1) * sin                   # a bf16 x meets float32 tables: float32
    return y if y.dtype == x.dtype else y.to(x.dtype)


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

    static = False  # a StaticCache: preallocated buffers, a tensor position

    def slot(self, key, dim: int) -> KVCache:
        if key not in self._slots:
            self._slots[key] = KVCache(dim)
        return self._slots[key]

    def advance(self, T: int) -> None:
        self.pos += T


class StaticKV:
    """Keys and values of one attention module in buffers of `length` positions along `dim`, made at the first
    call (zeros) and written in place at the cache's position: the shapes never change."""

    def __init__(self, cache: "StaticCache", dim: int):
        self.cache, self.dim, self.k, self.v = cache, dim, None, None

    def update(self, k, v):
        if self.k is None:
            shape = list(k.shape)
            shape[self.dim] = self.cache.length
            self.k, self.v = k.new_zeros(shape), v.new_zeros(shape)
        where = self.cache.pos + torch.arange(k.shape[self.dim], device=k.device)
        self.k.index_copy_(self.dim, where, k)
        self.v.index_copy_(self.dim, where, v)
        return self.k, self.v                                     # every position; those not written yet are masked


class StaticCache(Cache):
    """A Cache in preallocated buffers, for a compiled one-token decoding step (inference.Decoder with compile):
    every slot holds `length` (max_seq_len) positions, the position is a 0-d long tensor, and attention reads all
    positions under a mask of those written so far (`token_mask`). `reset()` starts again at position 0 in the same
    buffers, so that a step compiled for this cache keeps working after the window slides."""

    static = True

    def __init__(self, length: int, device="cpu"):
        super().__init__()
        self.length = length
        self.pos = torch.zeros((), dtype=torch.long, device=device)

    def __repr__(self):
        return f"StaticCache(pos={int(self.pos)}, length={self.length}, {len(self._slots)} KV slots)"

    def slot(self, key, dim: int) -> StaticKV:
        if key not in self._slots:
            self._slots[key] = StaticKV(self, dim)
        return self._slots[key]

    def advance(self, T: int) -> None:
        self.pos.add_(T)

    def reset(self) -> None:
        self.pos.zero_()

    def token_mask(self, T: int, device):
        """(T, length): query pos + i sees the cached positions 0 .. pos + i."""
        return torch.arange(self.length, device=device) <= self.pos + torch.arange(T, device=device)[:, None]


def _upto(cache) -> int | None:
    """A StaticCache's length (what a tensor position is bounded by), else None."""
    return cache.length if cache is not None and cache.static else None


class SelfAttention(LoggingModule):
    def __init__(self, dim: int, num_q_heads: int, num_kv_heads: int, head_dim: int, theta: float):
        super().__init__()
        self.Hq, self.Hkv, self.hd, self.theta = num_q_heads, num_kv_heads, head_dim, theta
        self.Wqkv = nn.Linear(dim, (num_q_heads + 2 * num_kv_heads) * head_dim, bias=False)  # q, k, v: one matmul
        self.Wo = nn.Linear(num_q_heads * head_dim, dim, bias=False)

    def _qkv(self, x, pos0: int, cache: Cache | None):
        """Rotated queries (B, Hq, T, hd) of x, and keys and values (B, Hkv, S, hd) of every position so far."""
        B, T, _ = x.shape
        qkv = self.Wqkv(x).view(B, T, self.Hq + 2 * self.Hkv, self.hd).transpose(1, 2)    # (B, Hq + 2Hkv, T, hd)
        tables = rope_range_tables(pos0, T, self.hd // 2, self.theta, x.device, upto=_upto(cache))  # (T, hd) x 2
        qk = rope(qkv[:, :self.Hq + self.Hkv], tables=tables)      # queries and keys rotated together
        q, k, v = qk[:, :self.Hq], qk[:, self.Hq:], qkv[:, self.Hq + self.Hkv:]             # (B, H.., T, hd)
        if cache is not None:
            k, v = cache.slot(self, dim=2).update(k, v)                                        # (B, Hkv, S, hd)
        return q, k, v

    @staticmethod
    def _mask(S: int, T: int, device):
        """The causal mask of T new queries after S - T cached keys, or None where is_causal (S == T) or no
        mask (a single query) does. is_causal aligns the mask top-left, right only for a square score
        matrix; a chunk of new queries after cached keys needs it written out, bottom-right aligned."""
        if S == T or T == 1:
            return None
        return torch.arange(S, device=device) <= (S - T + torch.arange(T, device=device))[:, None]  # (T, S)

    def _attend_tokens(self, q, k, v, cache: Cache | None):
        """Causal attention of the new queries q (B, Hq, T, hd) over the keys and values so far: (B, Hq, T, hd)."""
        S, T = k.shape[2], q.shape[2]
        if cache is not None and cache.static:  # every buffered position, those not written yet masked out
            mask, causal = cache.token_mask(T, q.device), False
        else:
            mask, causal = self._mask(S, T, q.device), S == T and T > 1
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              enable_gqa=self.Hq != self.Hkv)

    @log_io
    def forward(self, x, pos0: int = 0, cache: Cache | None = None):
        """x: (B, T, D) at positions pos0 .. pos0 + T - 1; with a cache, earlier positions are in it."""
        B, T, _ = x.shape
        q, k, v = self._qkv(x, pos0, cache)
        y = self._attend_tokens(q, k, v, cache)                                             # (B, Hq, T, hd)
        return self.Wo(y.transpose(1, 2).reshape(B, T, self.Hq * self.hd))                  # (B, T, D)


@dataclass
class FutureScale:
    """The predictions of one future chunk, made at each of the current call's positions."""
    k: int           # chunk index, 1 = nearest (offsets +2..+3 for fs_mult 2)
    vectors: torch.Tensor  # (B, T, C, D)
    first: int       # first offset of the chunk, a_k
    last: int        # last offset of the chunk, b_k
    kv: tuple | None = None  # keys and values (B, S, C, Hkv, hd) of all of the chunk's predictions so far, when
    #                          the model projects them once for every layer (fs_shared_memory_kv)


MEMORY_MODES = ("horizon", "causal", "self")
WINDOW_BLOCK = 8  # queries per block of windowed memory attention; 4 and 16 were slower (default model, CPU)


def check_memory_mode(mode: str):
    if mode not in MEMORY_MODES:
        raise ValueError(f"fs_memory={mode!r} is not allowed: choose one of {list(MEMORY_MODES)}")


def project_memory(Wkv, memory: list[FutureScale], s0, num_kv_heads: int, head_dim: int, theta: float,
                   use_rope: bool, upto: int | None = None):
    """Keys and values of the predictions in `memory`, made at positions s0, s0 + 1, ...: the scales' vectors
    side by side, (B, T, N, Hkv, hd) with N = sum of C over the scales, in one matmul."""
    vectors = torch.cat([m.vectors for m in memory], dim=2) if len(memory) > 1 else memory[0].vectors  # (B, T, N, D)
    B, T, N, _ = vectors.shape
    k, v = Wkv(vectors).view(B, T, N, 2, num_kv_heads, head_dim).unbind(3)                  # (B, T, N, Hkv, hd)
    if use_rope:
        # each key sits at the time its prediction is about: s + a_k (+ the sub-window's start if C > 1)
        ahead = tuple(m.first + (m.last - m.first + 1) // m.vectors.shape[2] * j
                      for m in memory for j in range(m.vectors.shape[2]))                  # N offsets
        k = rope(k, tables=rope_range_tables(s0, T, head_dim // 2, theta, k.device, ahead, upto))  # (B, T, N, Hkv, hd)
    return k, v


def memory_kv(attn, memory: list[FutureScale], pos0: int, cache: Cache | None) -> list[tuple]:
    """[(keys, values)] of each scale, (B, S, C, Hkv, hd) over every position so far: projected by the
    attention module `attn` (its Wkv, cached in its own slot), or as the model attached them to the scales
    when it projects them once for every layer (attn.Wkv is None)."""
    if attn.Wkv is None:
        return [m.kv for m in memory]
    k, v = project_memory(attn.Wkv, memory, pos0, attn.Hkv, attn.hd, attn.theta, attn.use_rope, _upto(cache))
    if cache is not None:
        k, v = cache.slot((attn, "memory"), dim=1).update(k, v)                              # (B, S, N, Hkv, hd)
    sizes = [m.vectors.shape[2] for m in memory]
    return list(zip(k.split(sizes, 2), v.split(sizes, 2)))


def memory_widths(memory: list[FutureScale], mode: str) -> list[int] | None:
    """How many positions back each scale's window reaches: b_k for 'horizon', 1 for 'self'; None for
    'causal', which sees every prediction made so far."""
    return None if mode == "causal" else [1 if mode == "self" else m.last for m in memory]


def attend_memory(q, kvs: list[tuple], widths: list[int] | None, pos0, with_lse: bool = False, static: bool = False):
    """Attention of queries q (B, T, Hkv, G, hd) at positions pos0.. over the predictions kvs (memory_kv), each
    query seeing its windows (widths, memory_widths) of predictions made at s <= t. `static`: kvs are a
    StaticCache's buffers of every position (pos0 a tensor), read under a mask.

    Returns y (B, T, Hq, hd) and, if with_lse, the log-sum-exp of each query's scores (B, T, Hq, 1), else None."""
    if static:
        return _attend_static(q, kvs, widths, pos0, with_lse)
    if widths is None:
        return _attend_all(q, kvs, pos0, with_lse)
    if q.shape[1] == 1:  # one new token while decoding: its windows are simply the last `width` cached predictions
        return _attend_last(q, kvs, widths, with_lse)
    return _attend_windows(q, kvs, widths, pos0, with_lse)


def _softmax_attend(scores, values, with_lse: bool):
    """softmax(scores) @ values, and the log-sum-exp of the scores if asked (None otherwise)."""
    if not with_lse:
        return scores.softmax(-1) @ values, None
    lse = scores.logsumexp(-1, keepdim=True)
    return (scores - lse).exp() @ values, lse


def _attend_all(q, kvs, pos0, with_lse):
    """'causal': every prediction made at s <= t, with a written-out (T, S*N) mask."""
    T = q.shape[1]
    k, v = (torch.cat(z, 2) if len(z) > 1 else z[0] for z in zip(*kvs))                     # (B, S, N, Hkv, hd)
    S, N = k.shape[1], k.shape[2]
    t = torch.arange(pos0, pos0 + T, device=q.device)
    s = torch.arange(pos0 + T - S, pos0 + T, device=q.device).repeat_interleave(N)          # (S*N,)
    return _attend_masked(q, k, v, s <= t[:, None], with_lse)                               # mask (T, S*N)


def _attend_static(q, kvs, widths, pos, with_lse):
    """Any memory mode over a StaticCache's buffers (B, L, C, Hkv, hd) of every position: query t = pos + i sees
    the predictions made at s <= t, and within its scale's window (s > t - width) unless widths is None."""
    T = q.shape[1]
    k, v = (torch.cat(z, 2) if len(z) > 1 else z[0] for z in zip(*kvs))                     # (B, L, N, Hkv, hd)
    t = (pos + torch.arange(T, device=q.device))[:, None]                                   # (T, 1)
    s = torch.arange(k.shape[1], device=q.device)                                           # (L,)
    masks = []
    for i, (scale_k, _) in enumerate(kvs):
        ok = s <= t if widths is None else (s <= t) & (s > t - widths[i])                   # (T, L)
        masks.append(ok[:, :, None].expand(-1, -1, scale_k.shape[2]))                       # (T, L, C)
    return _attend_masked(q, k, v, torch.cat(masks, 2).flatten(1), with_lse)                # mask (T, L*N)


def _attend_masked(q, k, v, mask, with_lse):
    """q (B, T, Hkv, G, hd) over keys and values (B, S, N, Hkv, hd) under a (T, S*N) mask, s-major."""
    B, T, Hkv, G, hd = q.shape
    k, v = k.flatten(1, 2).transpose(1, 2), v.flatten(1, 2).transpose(1, 2)                 # (B, Hkv, S*N, hd)
    if not with_lse:
        y = F.scaled_dot_product_attention(q.flatten(2, 3).transpose(1, 2), k, v, attn_mask=mask,
                                           enable_gqa=G > 1)                                # (B, Hq, T, hd)
        return y.transpose(1, 2), None                                                      # (B, T, Hq, hd)
    scores = (q.permute(0, 2, 3, 1, 4) / math.sqrt(hd)) @ k.unsqueeze(2).transpose(-1, -2)  # (B, Hkv, G, T, S*N)
    y, lse = _softmax_attend(scores.masked_fill(~mask, float("-inf")), v.unsqueeze(2), True)  # (B, Hkv, G, T, .)
    return y.permute(0, 3, 1, 2, 4).flatten(2, 3), lse.permute(0, 3, 1, 2, 4).flatten(2, 3)  # (B, T, Hq, hd | 1)


def _attend_last(q, kvs, widths, with_lse):
    """Windows of a single query, the newest position: no blocks and no mask, since every one of the last
    `width` predictions of a scale is in its window (and those never made are not in the cache)."""
    B, _, Hkv, G, hd = q.shape
    keys = torch.cat([k[:, -w:].flatten(1, 2) for (k, _), w in zip(kvs, widths)], 1)         # (B, K, Hkv, hd)
    values = torch.cat([v[:, -w:].flatten(1, 2) for (_, v), w in zip(kvs, widths)], 1)       # (B, K, Hkv, hd)
    scores = (q[:, 0] / math.sqrt(hd)) @ keys.permute(0, 2, 3, 1)                            # (B, Hkv, G, K)
    y, lse = _softmax_attend(scores, values.transpose(1, 2), with_lse)                       # (B, Hkv, G, hd | 1)
    return y.reshape(B, 1, Hkv * G, hd), None if lse is None else lse.reshape(B, 1, Hkv * G, 1)


def _key_blocks(z, lo: int, nb: int, span: int, Qb: int) -> list:
    """Pieces of z (B, S, C, Hkv, hd) that, side by side along dim 3, make (B, Hkv, nb, span*C, hd): block b
    holds the keys at indices lo + b*Qb .. lo + b*Qb + span - 1 (zeros where those fall outside 0..S-1; the
    caller masks them). The pieces are slices of Qb-aligned blocks: an unfold's overlapping windows would
    cost a slow scatter in backward (a third of the windowed attention's time, measured)."""
    B, S, C, Hkv, hd = z.shape
    r = -(-(span - Qb) // Qb)                       # earlier blocks a query block's span reaches into
    skip = r * Qb - (span - Qb)                     # entries of the first of them that it does not reach
    start, need = lo - skip, (nb + r) * Qb          # the key indices the blocks cover
    z = z.permute(0, 3, 1, 2, 4)[:, :, max(start, 0):start + need]                           # (B, Hkv, <=need, C, hd)
    z = F.pad(z, (0, 0, 0, 0, max(-start, 0), need - max(-start, 0) - z.shape[2])).unflatten(2, (nb + r, Qb))
    return [z[:, :, j:j + nb, skip if j == 0 else 0:].flatten(3, 4) for j in range(r + 1)]   # (B, Hkv, nb, ., hd)


def _attend_windows(q, kvs, widths, pos0, with_lse):
    """'horizon' and 'self': query t sees the predictions made at t - width + 1 .. t of each scale.

    Queries go in blocks of Qb; for each scale, block b's keys are the span = Qb + width - 1 positions its
    windows cover, so the block's scores are one small dense matmul over the scales' spans side by side —
    never a T x T*C matrix, and no gather whose backward is a slow scatter."""
    B, T, Hkv, G, hd = q.shape
    S = kvs[0][0].shape[1]
    Qb = min(WINDOW_BLOCK, T)
    nb = -(-T // Qb)                                                                        # query blocks
    Tp = nb * Qb                                                                            # T padded
    s_start = pos0 + T - S                                           # position of the first cached prediction
    i = torch.arange(Qb, device=q.device)[:, None]                                          # (Qb, 1)
    keys, values, masks = [], [], []
    for (k, v), width in zip(kvs, widths):
        span, C = Qb + width - 1, k.shape[2]
        lo = pos0 - width + 1 - s_start                              # index of the first key any query needs
        keys += _key_blocks(k, lo, nb, span, Qb)
        values += _key_blocks(v, lo, nb, span, Qb)
        j = torch.arange(span, device=q.device)                                             # (span,)
        s = pos0 - width + 1 + Qb * torch.arange(nb, device=q.device)[:, None, None] + j   # (nb, 1, span)
        ok = (j >= i) & (j <= i + width - 1) & (s >= s_start)        # (nb, Qb, span): in the window, and exists
        masks.append(ok.repeat_interleave(C, -1))                                           # (nb, Qb, span*C)
    if Tp != T:
        q = F.pad(q, (0, 0, 0, 0, 0, 0, 0, Tp - T))
    qb = q.unflatten(1, (nb, Qb)).permute(0, 3, 1, 2, 4, 5).reshape(B, Hkv, nb, Qb * G, hd)  # rows (i, g)
    mask = torch.cat(masks, -1).repeat_interleave(G, 1)                                     # (nb, Qb*G, K)
    scores = (qb * (1 / math.sqrt(hd))) @ torch.cat(keys, 3).transpose(-1, -2)              # (B, Hkv, nb, Qb*G, K)
    bias = torch.zeros(mask.shape, dtype=scores.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
    scores = scores + bias                                     # an added mask: its backward costs nothing
    y, lse = _softmax_attend(scores, torch.cat(values, 3), with_lse)                         # (B, Hkv, nb, Qb*G, .)

    def unblock(z):  # (B, Hkv, nb, Qb*G, d) -> (B, T, Hq, d)
        return z.unflatten(3, (Qb, G)).permute(0, 2, 3, 1, 4, 5).reshape(B, Tp, Hkv * G, z.shape[-1])[:, :T]
    return unblock(y), None if lse is None else unblock(lse)


class CrossAttention(LoggingModule):
    """Queries from the residual stream, keys and values from the future memory.

    `memory_mode` decides which predictions position t may see (all made at positions s <= t):
      'horizon': those whose chunk still reaches past t (s + b_k >= t + 1): a window of b_k positions;
      'causal':  all of them, stale ones included (a full attention over T * C keys per scale);
      'self':    only those made at t itself (a window of 1).
    Keys and values are projected once per prediction (and cached during generation): by this module's Wkv,
    or, with `shared_kv`, by the model once for every layer. For the windowed modes, queries go in blocks
    of WINDOW_BLOCK: a block of Qb queries shares the Qb + width - 1 key positions its windows span, so the
    scores are a few dense matmuls of O(T * (Qb + width)) — never a T x T*C matrix.
    """

    MODES = MEMORY_MODES

    def __init__(self, dim: int, num_q_heads: int, num_kv_heads: int, head_dim: int, theta: float,
                 memory_mode: str, use_rope: bool, shared_kv: bool = False):
        super().__init__()
        check_memory_mode(memory_mode)
        self.Hq, self.Hkv, self.hd, self.theta = num_q_heads, num_kv_heads, head_dim, theta
        self.memory_mode, self.use_rope = memory_mode, use_rope
        self.Wq = nn.Linear(dim, num_q_heads * head_dim, bias=False)
        self.Wkv = None if shared_kv else nn.Linear(dim, 2 * num_kv_heads * head_dim, bias=False)
        self.Wo = nn.Linear(num_q_heads * head_dim, dim, bias=False)

    @log_io
    def forward(self, x, memory: list[FutureScale], pos0: int = 0, cache: Cache | None = None):
        """x: (B, T, D) queries at positions pos0..pos0+T-1; memory: predictions made at those same
        positions (earlier ones come from the cache)."""
        B, T, _ = x.shape
        q = self.Wq(x).view(B, T, self.Hkv, self.Hq // self.Hkv, self.hd)                   # (B, T, Hkv, G, hd)
        if self.use_rope:
            cos, sin = rope_range_tables(pos0, T, self.hd // 2, self.theta, x.device, upto=_upto(cache))
            q = rope(q, tables=(cos[:, None, None], sin[:, None, None]))                   # (B, T, Hkv, G, hd)
        y, _ = attend_memory(q, memory_kv(self, memory, pos0, cache), memory_widths(memory, self.memory_mode), pos0,
                             static=cache is not None and cache.static)
        return self.Wo(y.reshape(B, T, self.Hq * self.hd))                                  # (B, T, D)


class DualAttention(SelfAttention):
    """Self-attention whose queries also read the future memory, under a softmax of their own; the two
    outputs are summed before the one output projection (fs_attention='dual'): the memory costs no query or
    output projection, rotation, norm or residual of its own, only its attention.

    Query t sees the predictions its memory mode allows (as CrossAttention), with keys and values projected
    by this module's Wkv, or by the model once for every layer (shared_kv).
    """

    def __init__(self, dim: int, num_q_heads: int, num_kv_heads: int, head_dim: int, theta: float,
                 memory_mode: str, use_rope: bool, shared_kv: bool = False):
        super().__init__(dim, num_q_heads, num_kv_heads, head_dim, theta)
        check_memory_mode(memory_mode)
        self.memory_mode, self.use_rope = memory_mode, use_rope
        self.Wkv = None if shared_kv else nn.Linear(dim, 2 * num_kv_heads * head_dim, bias=False)

    def _attend_memory(self, q, memory, pos0, cache, with_lse=False):
        """attend_memory with self-attention's rotated queries q (B, Hq, T, hd): (B, T, Hq, hd) [, (B, T, Hq, 1)]."""
        return attend_memory(q.transpose(1, 2).unflatten(2, (self.Hkv, -1)), memory_kv(self, memory, pos0, cache),
                             memory_widths(memory, self.memory_mode), pos0, with_lse,
                             static=cache is not None and cache.static)

    @log_io
    def forward(self, x, memory: list[FutureScale], pos0: int = 0, cache: Cache | None = None):
        B, T, _ = x.shape
        q, k, v = self._qkv(x, pos0, cache)                                   # (B, Hq, T, hd), (B, Hkv, S, hd) x 2
        y = self._attend_tokens(q, k, v, cache).transpose(1, 2)                             # (B, T, Hq, hd)
        y = y + self._attend_memory(q, memory, pos0, cache)[0]                              # (B, T, Hq, hd)
        return self.Wo(y.reshape(B, T, self.Hq * self.hd))                                  # (B, T, D)


class JointAttention(DualAttention):
    """Self-attention whose keys are the context's tokens and the future memory's predictions, under one
    softmax (fs_attention='joint'): one module instead of self-attention followed by cross-attention.

    Query t sees tokens 0..t and the predictions its memory mode allows (as CrossAttention). The two kinds of
    keys are scored apart, each the cheap way (SDPA's fused kernel for the tokens, blocked windows for the
    predictions), and joined exactly: the memory enters SDPA's softmax as one extra "anchor" key whose score
    for query t is the log-sum-exp of t's memory scores, so the anchor's weight is the memory's share of the
    joint softmax; the output is the tokens' part plus that share times the memory's attention output. That
    exactness costs time on a CPU: the extra channel of q, k and v that carries the anchor makes SDPA a third
    slower (54 vs 40 ms forward + backward, default shapes) and the log-sum-exp doubles the memory attention's
    time, so the whole module takes longer than self-attention and cross-attention apart (measured).
    """

    @log_io
    def forward(self, x, memory: list[FutureScale], pos0: int = 0, cache: Cache | None = None):
        B, T, _ = x.shape
        hd = self.hd
        q, k, v = self._qkv(x, pos0, cache)                                   # (B, Hq, T, hd), (B, Hkv, S, hd) x 2
        S = k.shape[2]
        y_mem, lse = self._attend_memory(q, memory, pos0, cache, with_lse=True)             # (B, T, Hq, hd | 1)
        # the anchor: key [0.., 1] scores q's extra channel, lse / scale, and its value [0.., 1] reads out its weight
        q = torch.cat([q, lse.transpose(1, 2) * math.sqrt(hd)], -1)                          # (B, Hq, T, hd + 1)
        anchor = F.pad(k.new_ones(1, 1, 1, 1), (hd, 0)).expand(B, self.Hkv, 1, hd + 1)
        k, v = (torch.cat([anchor, F.pad(z, (0, 1))], 2) for z in (k, v))                    # (B, Hkv, 1 + S, hd + 1)
        gqa, scale = self.Hq != self.Hkv, 1 / math.sqrt(hd)
        static = cache is not None and cache.static
        if S == T and T > 1 and not static:  # a dummy first query squares the matrix: query t sees anchor, 0..t
            y = F.scaled_dot_product_attention(F.pad(q, (0, 0, 1, 0)), k, v, is_causal=True, scale=scale,
                                               enable_gqa=gqa)[:, :, 1:]                    # (B, Hq, T, hd + 1)
        else:
            mask = cache.token_mask(T, x.device) if static else self._mask(S, T, x.device)
            mask = None if mask is None else torch.cat([mask.new_ones(T, 1), mask], 1)     # (T, 1 + S)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
        y = y.transpose(1, 2)                                                               # (B, T, Hq, hd + 1)
        y = y[..., :hd] + y[..., hd:] * y_mem                  # the tokens' part + the memory's share of its output
        return self.Wo(y.reshape(B, T, self.Hq * hd))                                       # (B, T, D)
