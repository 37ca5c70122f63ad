"""The loss: next-token cross-entropy plus, for each future chunk k, a weighted future-sight loss.

Legend: B batch, T time, Tt target columns (T + H - 1 for training batches), L tokens in a chunk,
C vectors per chunk, D model dim, V vocab_size.

`target_ids[:, i]` is the token after input i; chunk k of position i is target columns
i + a_k - 1 .. i + b_k - 1 (a_k, b_k: the chunk's first and last offset). A chunk that runs past the
columns given or contains an end-of-story (or pad) token is left out of its loss, for every pool type.
Everything is vectorised over positions: one `unfold` per chunk, no Python loop over time.
"""

import torch
import torch.nn.functional as F
from torch import nn

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


def chunk_loss(pred, target, valid, kind: str):
    """Loss of one future chunk. pred, target: (B, T, C, D); for 'bce' pred are vocabulary logits and
    target the multi-hot bag of each sub-window's tokens, (B, T, C, V)."""
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
        raise ValueError(f"fs_loss={kind!r} is not allowed: choose one of ['cosine', 'mse', 'mae', 'bce']")
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

class Loss(LoggingModule):
    """Total = NTP cross-entropy + sum_k fs_loss_lambda**k * fs_loss_k. The parts are returned too, as
    detached 0-d tensors (`float(v)` reads one; no GPU sync is forced every step): ntp_loss, fs_loss_k,
    fs_target_cos_k (target diversity) and total_loss. Models are compared on `ntp_loss`, never on the
    total."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.eos_id, self.pad_id = cfg.vocab_len + 1, cfg.vocab_len + 2
        self.pre_pool_norm = Norm(cfg.dim, cfg.norm_type, affine=False, eps=cfg.eps) if cfg.pre_pool_norm else None
        self.poolers = nn.ModuleList()
        if cfg.fs_loss != "bce":
            for length, c in zip(cfg.chunk_lens, cfg.chunk_vectors):
                self.poolers.append(Pooler(cfg.pool_type, cfg.dim, length, c, cfg.pool_output_linear, cfg.pool_bias))

    def targets(self, target_ids, T: int, embedding):
        """[(target (B, T, C, D) or bag (B, T, C, V), valid (B, T))] for each chunk k = 1..P."""
        H = self.cfg.lookahead
        cols = target_ids[:, :T + H - 1]
        if cols.shape[1] < T + H - 1:  # too few look-ahead columns: pad, and the chunks reaching them are masked
            cols = F.pad(cols, (0, T + H - 1 - cols.shape[1]), value=self.pad_id)  # (B, T + H - 1)
        e = None
        if self.cfg.fs_loss != "bce":  # every chunk's tokens are embedded (and normed) once, together
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.fs_detach_targets):
                e = embedding(cols)                                                # (B, T + H - 1, D)
                if self.pre_pool_norm is not None:
                    e = self.pre_pool_norm(e)
        out = []
        for k, ((first, last), c) in enumerate(zip(self.cfg.chunk_offsets, self.cfg.chunk_vectors), start=1):
            ids = chunk_windows(cols, T, first, last, self.pad_id)             # (B, T, L)
            valid = chunk_valid(ids, self.eos_id, self.pad_id)
            if self.cfg.fs_loss == "bce":
                sub = ids.unflatten(-1, (c, ids.shape[-1] // c))                  # (B, T, C, W)
                bag = torch.zeros(*sub.shape[:-1], embedding.num_embeddings, device=ids.device)
                out.append((bag.scatter_(-1, sub, 1.0), valid))                    # (B, T, C, V)
                continue
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.fs_detach_targets):
                windows = e[:, first - 1:first - 1 + T + last - first].unfold(1, last - first + 1, 1)
                out.append((self.poolers[k - 1](windows.transpose(-1, -2)), valid))  # (B, T, C, D)
        return out

    @log_io
    def forward(self, logits, preds: dict, target_ids, embedding, to_logits=None):
        """logits: (B, T, V); preds: {k: (B, T, C, D)}; target_ids: (B, Tt >= T);
        to_logits maps predicted vectors to vocabulary logits (for fs_loss='bce')."""
        B, T, V = logits.shape
        ntp = F.cross_entropy(logits.float().reshape(B * T, V), target_ids[:, :T].reshape(-1),
                              ignore_index=self.pad_id)
        total, parts = ntp, {"ntp_loss": ntp.detach()}
        if not preds:
            return total, parts
        for k, (target, valid) in enumerate(self.targets(target_ids, T, embedding), start=1):
            pred = to_logits(preds[k]) if self.cfg.fs_loss == "bce" else preds[k]
            loss_k = chunk_loss(pred, target, valid, self.cfg.fs_loss)
            total = total + self.cfg.fs_loss_lambda ** k * loss_k
            parts[f"fs_loss_{k}"] = loss_k.detach()
            if self.cfg.fs_loss != "bce":
                parts[f"fs_target_cos_{k}"] = target_cosine(target, valid)
        parts["total_loss"] = total.detach()
        return total, parts
