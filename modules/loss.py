"""The loss: next-token cross-entropy plus, for each future chunk k, a weighted future-sight loss.

Legend: B batch, T time, Tt target columns (T + H - 1 for training batches), L tokens in a chunk,
C vectors per chunk, D model dim, V vocab_size.

`target_ids[:, i]` is the token after input i; chunk k of position i is target columns
i + a_k - 1 .. i + b_k - 1 (a_k, b_k: the chunk's first and last offset). A chunk that runs past the
columns given or contains an end-of-story (or pad) token is left out of its loss, for every pool type.
Everything is vectorised over positions: one `unfold` per chunk, no Python loop over time.

The chunk targets come in three kinds (fs_loss):
- cosine, mse, mae: a vector, pool(norm(embeddings of the chunk's tokens)), against the predicted vector;
- bce: the chunk's bag of tokens, against the prediction read through the output layer as vocabulary logits;
- rank: the order in which the chunk's tokens first come (`order_target`), against the same logits.

The future chunk weights (`fs_weights`) are lambda**k, times a schedule over training for
fs_lambda_schedule = decay / reverse: the training loop tells the loss how far it is (`Loss.set_progress`).
"""

import torch
import torch.nn.functional as F
from torch import nn

from config import VOCAB_FS_LOSSES
from modules.logging import LoggingModule, log_io
from modules.norm import Norm
from modules.pool_ops import Pooler


def chunk_windows(target_ids, T: int, first: int, last: int, pad_id: int):
    """Column index windows of one chunk for each of the T positions.

    Returns ids (B, T, L), the token ids of each position's chunk (a view), pad_id where the chunk runs
    past the columns given.
    """
    length = last - first + 1
    need = first - 1 + T + length - 1                     # columns up to the last position's chunk end
    cols = target_ids[:, first - 1:need]                   # (B, <= T + L - 1)
    if cols.shape[1] < T + length - 1:
        cols = F.pad(cols, (0, T + length - 1 - cols.shape[1]), value=pad_id)
    return cols.unfold(1, length, 1)                       # (B, T, L)


def chunk_valid(ids, eos_id: int, pad_id: int):
    """(B, T) True where the chunk lies within the columns given and inside one story."""
    return ~((ids == eos_id) | (ids == pad_id)).any(-1)


def masked_mean(per_position, valid):
    """Mean of a (B, T) loss over the valid positions; 0 (with a graph) when none is valid."""
    return (per_position * valid).sum() / valid.sum().clamp(min=1)


# fs_loss='rank', what is predicted, from what, and why it cannot see the future:
# - predicted: for position t and chunk k (offsets a..b, or each of its C sub-windows), the order in which the
#   tokens of t+a..t+b first come, as a distribution over the vocabulary (`order_target`);
# - from: chunk k's head applied to the residual stream at t, read as vocabulary logits through the final norm
#   and the output layer (as for 'bce'). That residual is built from tokens 0..t only, so the logits at t are too;
# - the tokens t+a..t+b enter the target, that is the loss, and nothing else: the memory the layers read holds
#   the model's own predictions, never the targets, so no logit at t depends on a token after t (the causality
#   and cache tests check it for every option). Windows that run past the text or hold an eos or pad are left
#   out, as for every fs loss, and like 'bce' it uses no pooler.


def order_target(ids):
    """The token-order target of fs_loss='rank' (after Zuhri et al. 2025, "Predicting the Order of Upcoming
    Tokens"): for windows of ids (..., W), the weight of each entry, (..., W), as a distribution over the window.

    The token at place j of the window (j = 0 is the nearest) scores W - j, that is b - d + 1 for a window of
    offsets a..b and a token first coming at offset d: the sooner a token comes, the higher it ranks. A token
    that comes again keeps the score of its first coming (its later places weigh 0), and tokens that do not come
    score -inf. The weights are the softmax of those scores, so the target `softmax(scores)` over the vocabulary
    puts weight w_j on token ids[..., j] and nothing elsewhere; as scores fall by 1 a place, each place weighs
    e = 2.7 times the next. The target is built from the text alone: nothing here carries a gradient."""
    W = ids.shape[-1]
    place = torch.arange(W, device=ids.device)
    earlier = (ids[..., :, None] == ids[..., None, :]) & (place[None, :] < place[:, None])  # [j, i]: i < j, same id
    score = (W - place).to(torch.float32).expand(ids.shape)                         # (..., W)
    return score.masked_fill(earlier.any(-1), float("-inf")).softmax(-1)


def rank_loss(logits, ids):
    """fs_loss='rank' of each window: the cross-entropy between the order target and softmax(logits), less the
    target's own entropy (the KL divergence: 0 for a perfect prediction, like every other fs loss; the entropy
    depends on the text only, so the gradient is the ListNet cross-entropy's). logits (..., V), ids (..., W)
    -> (...). Only the W logits of the window's tokens are gathered: no (..., V) target is built."""
    w = order_target(ids)                                                           # (..., W)
    picked = logits.gather(-1, ids)                                                 # (..., W)
    cross = torch.logsumexp(logits, -1) - (w * picked).sum(-1)                      # -sum_v target(v) log p(v)
    return cross + torch.special.xlogy(w, w).sum(-1)                                # - H(target)


def chunk_loss(pred, target, valid, kind: str):
    """Loss of one future chunk, (B, T) positions averaged over the valid ones. pred, target: (B, T, C, D); for
    'bce' pred are vocabulary logits (B, T, C, V) and target the multi-hot bag of each sub-window's tokens,
    (B, T, C, V); for 'rank' pred are vocabulary logits and target the token ids of each sub-window, (B, T, C, W)."""
    if kind == "rank":
        return masked_mean(rank_loss(pred.float(), target).mean(-1), valid)
    pred, target = pred.float(), target.float()
    if kind == "cosine":  # F.cosine_similarity written out: the same values, 40% less time (forward + backward)
        dot = (pred * F.normalize(target, dim=-1, eps=1e-8)).sum(-1)                        # (B, T, C)
        per = 1 - dot * torch.rsqrt((pred * pred).sum(-1).clamp(min=1e-16))
    elif kind == "mse":
        per = (pred - target).pow(2).mean(-1)
    elif kind == "mae":
        per = (pred - target).abs().mean(-1)
    elif kind == "bce":
        per = F.binary_cross_entropy_with_logits(pred, target, reduction="none").mean(-1)
    else:
        raise ValueError(f"fs_loss={kind!r} is not allowed: choose one of ['cosine', 'mse', 'mae', 'bce', 'rank']")
    return masked_mean(per.mean(-1), valid)


@torch.no_grad()
def target_cosine(target, valid, max_vectors: int = 256):
    """Mean pairwise cosine similarity of the valid targets among the first (about) max_vectors of a batch,
    as a 0-d tensor: near 1 means the targets collapsed to one direction. NaN with fewer than two.
    Weighted by the mask rather than indexed with it, so its shape never depends on the data."""
    rows = max(1, -(-max_vectors // target.shape[1]))          # enough sequences for max_vectors positions
    vecs = F.normalize(target[:rows].flatten(0, -2).float(), dim=-1)                    # (n, D)
    w = valid[:rows, :, None].expand(target[:rows].shape[:-1]).flatten().float()       # (n,)
    gram = vecs @ vecs.T                                                                # (n, n)
    pairs = w.sum() ** 2 - (w * w).sum()
    return ((w @ gram @ w) - (w * w * gram.diagonal()).sum()) / pairs


def fs_weights(cfg, fraction: float) -> list[float]:
    """The weight of each future chunk's loss, k = 1..P, `fraction` of the way through training (0 = the first
    step, 1 = the end): lambda**k * s_k(fraction), where, with E = fs_lambda_end,
    - constant: s_k = 1 throughout;
    - decay: s_k falls linearly from 1 at the start to 0 at E, for every chunk at once;
    - reverse (a reverse curriculum: the furthest chunk is switched off first, then the next): chunk k holds 1
      until E (P - k) / P, then falls linearly to 0 at E (P - k + 1) / P; chunk P falls over the first P-th of E,
      chunk 1 over the last.
    Past E every schedule but constant leaves next-token prediction alone."""
    P, E, lam = cfg.fs_periods, cfg.fs_lambda_end, cfg.fs_loss_lambda
    f = min(max(float(fraction), 0.0), 1.0)
    out = []
    for k in range(1, P + 1):
        if cfg.fs_lambda_schedule == "constant":
            s = 1.0
        elif cfg.fs_lambda_schedule == "decay":
            s = max(0.0, 1.0 - f / E)
        else:  # reverse: chunk k's own stretch of E / P
            start, stop = E * (P - k) / P, E * (P - k + 1) / P
            s = min(1.0, max(0.0, (stop - f) / (stop - start)))
        out.append(lam ** k * s)
    return out


class Loss(LoggingModule):
    """Total = NTP cross-entropy + sum_k w_k * fs_loss_k, with w_k = fs_loss_lambda**k under a constant schedule
    and `fs_weights` otherwise. The parts are returned too, as detached 0-d tensors (`float(v)` reads one; no GPU
    sync is forced every step): ntp_loss, the unweighted fs_loss_k (comparable across schedules), fs_target_cos_k
    (target diversity) and total_loss. Models are compared on `ntp_loss`, never on the total."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.eos_id, self.pad_id = cfg.vocab_len + 1, cfg.vocab_len + 2
        # the scheduled weights live in a buffer that set_progress overwrites in place, so a compiled model reads
        # the new values without recompiling (a Python float would be baked into the graph); not saved with the
        # weights: a loaded model starts where a new one does, at fraction 0
        self.register_buffer("fs_weight", torch.tensor(fs_weights(cfg, 0.0), dtype=torch.float32), persistent=False)
        self.pre_pool_norm = Norm(cfg.dim, cfg.norm_type, affine=False, eps=cfg.eps) if cfg.pre_pool_norm else None
        self.poolers = nn.ModuleList()
        if cfg.fs_loss not in VOCAB_FS_LOSSES:
            for length, c in zip(cfg.chunk_lens, cfg.chunk_vectors):
                self.poolers.append(Pooler(cfg.pool_type, cfg.dim, length, c, cfg.pool_output_linear, cfg.pool_bias))

    def targets(self, target_ids, T: int, embedding):
        """[(target (B, T, C, D) or bag (B, T, C, V), valid (B, T))] for each chunk k = 1..P."""
        H = self.cfg.lookahead
        cols = target_ids[:, :T + H - 1]
        if cols.shape[1] < T + H - 1:  # too few look-ahead columns: pad, and the chunks reaching them are masked
            cols = F.pad(cols, (0, T + H - 1 - cols.shape[1]), value=self.pad_id)  # (B, T + H - 1)
        e = None
        if self.cfg.fs_loss not in VOCAB_FS_LOSSES:  # every chunk's tokens are embedded (and normed) once, together
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.fs_detach_targets):
                e = embedding(cols)                                                # (B, T + H - 1, D)
                if self.pre_pool_norm is not None:
                    e = self.pre_pool_norm(e)
        out = []
        for k, ((first, last), c) in enumerate(zip(self.cfg.chunk_offsets, self.cfg.chunk_vectors), start=1):
            ids = chunk_windows(cols, T, first, last, self.pad_id)             # (B, T, L)
            valid = chunk_valid(ids, self.eos_id, self.pad_id)
            if self.cfg.fs_loss in VOCAB_FS_LOSSES:
                sub = ids.unflatten(-1, (c, ids.shape[-1] // c))                  # (B, T, C, W)
                if self.cfg.fs_loss == "rank":  # the ids themselves: rank_loss gathers their logits
                    out.append((sub, valid))
                    continue
                bag = torch.zeros(*sub.shape[:-1], embedding.num_embeddings, device=ids.device)
                out.append((bag.scatter_(-1, sub, 1.0), valid))                    # (B, T, C, V)
                continue
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.fs_detach_targets):
                windows = e[:, first - 1:first - 1 + T + last - first].unfold(1, last - first + 1, 1)
                out.append((self.poolers[k - 1](windows.transpose(-1, -2)), valid))  # (B, T, C, D)
        return out

    def target_vectors(self, target_ids, T: int, embedding):
        """[(target (B, T, C, D), valid (B, T))] for each chunk k = 1..P: a vector per chunk that a prediction's
        cosine is measured against (scoring.score_windows). For the vector losses these are `targets`. For
        fs_loss='bce', whose loss compares against a bag of tokens instead, the vector is the mean normalised
        embedding of each sub-window's tokens: with tied weights, the direction whose logits favour exactly the
        bag's tokens; for fs_loss='rank', the same embeddings weighed by the order target (`order_target`), the
        sooner the heavier."""
        if self.cfg.fs_loss not in VOCAB_FS_LOSSES:
            return self.targets(target_ids, T, embedding)
        H = self.cfg.lookahead
        cols = F.pad(target_ids[:, :T + H - 1], (0, max(0, T + H - 1 - target_ids.shape[1])), value=self.pad_id)
        out = []
        for (first, last), c in zip(self.cfg.chunk_offsets, self.cfg.chunk_vectors):
            ids = chunk_windows(cols, T, first, last, self.pad_id)                  # (B, T, L)
            sub = ids.unflatten(2, (c, -1))                                         # (B, T, C, W)
            e = F.normalize(embedding(sub).float(), dim=-1)                         # (B, T, C, W, D)
            target = (order_target(sub)[..., None] * e).sum(3) if self.cfg.fs_loss == "rank" else e.mean(3)
            out.append((target, chunk_valid(ids, self.eos_id, self.pad_id)))
        return out

    def set_progress(self, fraction: float) -> None:
        """Tell the loss how far training is (0 = the first step, 1 = the end): the weights of a scheduled
        fs_lambda_schedule follow (`fs_weights`). Evaluation reads the same parts whatever the weights."""
        if self.cfg.fs_periods and self.cfg.fs_lambda_schedule != "constant":
            self.fs_weight.copy_(torch.tensor(fs_weights(self.cfg, fraction), dtype=torch.float32))

    @log_io
    def forward(self, logits, preds: dict, target_ids, embedding, to_logits=None):
        """logits: (B, T, V); preds: {k: (B, T, C, D)}; target_ids: (B, Tt >= T);
        to_logits maps predicted vectors to vocabulary logits (for fs_loss='bce' and 'rank')."""
        B, T, V = logits.shape
        ntp = F.cross_entropy(logits.float().reshape(B * T, V), target_ids[:, :T].reshape(-1),
                              ignore_index=self.pad_id)
        total, parts = ntp, {"ntp_loss": ntp.detach()}
        if not preds:
            return total, parts
        for k, (target, valid) in enumerate(self.targets(target_ids, T, embedding), start=1):
            pred = to_logits(preds[k]) if self.cfg.fs_loss in VOCAB_FS_LOSSES else preds[k]
            loss_k = chunk_loss(pred, target, valid, self.cfg.fs_loss)
            # a constant schedule multiplies by the Python float, exactly as before the schedules existed
            constant = self.cfg.fs_lambda_schedule == "constant"
            weight = self.cfg.fs_loss_lambda ** k if constant else self.fs_weight[k - 1]
            total = total + weight * loss_k
            parts[f"fs_loss_{k}"] = loss_k.detach()
            if self.cfg.fs_loss not in VOCAB_FS_LOSSES:
                parts[f"fs_target_cos_{k}"] = target_cosine(target, valid)
        parts["total_loss"] = total.detach()
        return total, parts
