"""Training FLOPs per token, counted from the configuration: the one estimate that equal-compute comparisons
(`train.py --match_flops`), the logs' `flops` column and the benchmarks' achieved FLOP/s all use.

Counting rules (a multiply-add is 2 FLOPs; a token's vector x through an n -> m linear layer is 2nm):
  - every linear layer a token's vectors pass through, once per vector: q/k/v and output projections,
    the MLP, the future heads, the cross-attention's memory keys/values (once per prediction in the
    memory, per future-sight layer that projects it), the output projection (tied or not), and for
    fs_loss='bce' or 'rank' the output projection once more per predicted chunk vector;
  - attention's two matmuls (scores q.k and the weighted sum of v), 2 * 2 * heads * head_dim FLOPs per
    key a query actually attends to: (t + 1) keys at position t for causal self-attention, the windows
    of docs/design.md §2 for cross-attention (b_k positions x C_k vectors per scale for 'horizon', C_k for
    'self', (t + 1) x C_k for 'causal'), averaged over the T positions of a training window. Work that
    an implementation spends on masked-out keys (a dense causal kernel, padded blocks) is not counted:
    this is the arithmetic the model needs, not what a kernel happens to do;
  - training = 3 x forward (the backward pass costs twice the forward's matmuls), as in Kaplan et al.
    2020's 6N. Norms, activations, rotary encodings, softmax, the loss's elementwise work and the pooling
    of targets (parameter-free by default) are left out: a few percent at these sizes, and the same for
    every model.
With no future sight and T -> 0 this is 6 x (the matmul parameters used per token), the usual 6N.
"""

from config import VOCAB_FS_LOSSES
from modules.mlp import hidden_width

TRAIN_MULT = 3  # forward + backward (2x forward)


def _layer(cfg, T: int) -> dict:
    """Forward FLOPs per token of one transformer layer: self-attention then MLP."""
    D, Hq, Hkv, hd = cfg.dim, cfg.num_q_heads, cfg.num_kv_heads, cfg.head_dim
    keys = (T + 1) / 2                                         # mean of t + 1 over t = 0 .. T - 1
    return {"linear": 2 * D * (Hq + 2 * Hkv) * hd + 2 * Hq * hd * D + _mlp(cfg, D),
            "attention": 2 * 2 * Hq * hd * keys}


def _mlp(cfg, out_dim: int) -> int:
    h = hidden_width(cfg.dim, cfg.mlp_hidden_mult, cfg.mlp_gated)
    return 2 * cfg.dim * h * (2 if cfg.mlp_gated else 1) + 2 * h * out_dim


def _mean_window(width: int, T: int) -> float:
    """Mean over t = 0 .. T - 1 of min(width, t + 1): the positions a window of `width` reaches back."""
    return sum(min(width, t + 1) for t in range(T)) / T


def _cross_attention(cfg, scales: list[int], T: int) -> dict:
    """Forward FLOPs per token of one future-sight layer's reading of the memory, the chunks `scales` (k's).
    fs_attention 'joint' and 'dual' read it with self-attention's queries and output projection (no Wq, Wo of
    their own); with fs_shared_memory_kv the keys and values are the model's, counted once in `flops_breakdown`."""
    D, Hq, Hkv, hd = cfg.dim, cfg.ca_num_q_heads, cfg.ca_num_kv_heads, cfg.ca_head_dim
    vectors = [cfg.chunk_vectors[k - 1] for k in scales]
    lasts = [cfg.chunk_offsets[k - 1][1] for k in scales]
    if cfg.fs_memory == "horizon":
        keys = sum(c * _mean_window(b, T) for c, b in zip(vectors, lasts))
    elif cfg.fs_memory == "self":
        keys = sum(vectors)
    else:  # causal
        keys = sum(vectors) * (T + 1) / 2
    own_qo = cfg.fs_attention not in ("joint", "dual")
    own_kv = not cfg.fs_shared_memory_kv
    return {"linear": own_qo * (2 * D * Hq * hd + 2 * Hq * hd * D) + own_kv * 2 * D * 2 * Hkv * hd * sum(vectors),
            "attention": 2 * 2 * Hq * hd * keys}


def flops_breakdown(cfg, seq_len: int | None = None) -> dict:
    """Forward FLOPs per token by part, for training windows of seq_len tokens (default max_seq_len):
    {part: {"linear": ..., "attention": ...}} with parts body, fs_layers, cross_attention, heads, output,
    fs_loss. `flops_per_token` is 3 x their sum."""
    T = seq_len or cfg.max_seq_len
    P, D, V = cfg.fs_periods, cfg.dim, cfg.vocab_size
    layer = _layer(cfg, T)
    out = {"body": {k: v * (cfg.num_layers - P) for k, v in layer.items()},
           "fs_layers": {k: v * P for k, v in layer.items()},
           "cross_attention": {"linear": 0.0, "attention": 0.0},
           "heads": {"linear": 0.0, "attention": 0.0},
           "output": {"linear": 2 * D * V, "attention": 0.0},
           "fs_loss": {"linear": 0.0, "attention": 0.0}}
    for j in range(P):  # staggered: layer j reads chunks P .. P - j; parallel: all of them
        scales = list(range(P, P - j - 1, -1)) if cfg.fs_arrangement == "staggered" else list(range(1, P + 1))
        for key, value in _cross_attention(cfg, scales, T).items():
            out["cross_attention"][key] += value
    if P and cfg.fs_shared_memory_kv:  # every prediction's keys and values projected once, for all layers
        out["cross_attention"]["linear"] += 2 * D * 2 * cfg.ca_num_kv_heads * cfg.ca_head_dim * sum(cfg.chunk_vectors)
    for c in cfg.chunk_vectors:
        head = {"linear": 2 * D * c * D, "attention": 0.0}
        if cfg.fs_output_layer == "mlp":
            head["linear"] = _mlp(cfg, c * D)
        elif cfg.fs_output_layer == "layer":
            head = {k: v + (head[k]) for k, v in layer.items()}
        for key, value in head.items():
            out["heads"][key] += value
        if cfg.fs_loss in VOCAB_FS_LOSSES:
            out["fs_loss"]["linear"] += 2 * D * V * c          # each chunk vector through the output layer
        elif cfg.pool_output_linear:
            out["fs_loss"]["linear"] += 2 * D * D * c          # the pooler's linear layer on each target vector
    return out


def flops_per_token(cfg, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward and backward) of a ModelConfig: see the rules at the top."""
    parts = flops_breakdown(cfg, seq_len)
    return TRAIN_MULT * sum(p["linear"] + p["attention"] for p in parts.values())


def training_flops(cfg, tokens: int, seq_len: int | None = None) -> float:
    """FLOPs of training on `tokens` tokens: tokens x flops_per_token."""
    return tokens * flops_per_token(cfg, seq_len)
