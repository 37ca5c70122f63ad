"""Batches: windows of the cached token ids (data.py) for the model. `get_batch` draws random training windows,
`eval_batches` walks a split in fixed, non-overlapping windows so that every token is a target exactly once.

Data flows one way: cached token ids -> batches -> model.
"""

import numpy as np
import torch

from data import TokenData


def _windows(stream: np.ndarray, starts: np.ndarray, seq_len: int, lookahead: int, pad_id: int):
    """(inputs, targets): stream[s : s+T] and stream[s+1 : s+T+H] for each start s, pad_id past the end."""
    idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seq_len + lookahead)  # (B, T + H)
    inside = idx < len(stream)
    ids = np.asarray(stream[np.where(inside, idx, 0)], dtype=np.int64)
    ids[~inside] = pad_id
    inputs = torch.from_numpy(np.ascontiguousarray(ids[:, :seq_len]))  # (B, T)
    targets = torch.from_numpy(np.ascontiguousarray(ids[:, 1:]))  # (B, T + H - 1)
    return inputs, targets


def _check_window(stream: np.ndarray, split: str, seq_len: int, lookahead: int, min_len: int) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"seq_len={seq_len!r} is not allowed: must be an int >= 1")
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
        raise ValueError(f"lookahead={lookahead!r} is not allowed: must be an int >= 1 (1 = next token only)")
    if len(stream) < min_len:
        raise ValueError(f"the {split} split has {len(stream)} tokens, too few for one window of "
                         f"seq_len={seq_len} inputs and their next-token targets")


def get_batch(data: TokenData, split: str, batch_size: int, seq_len: int, lookahead: int = 1,
              generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random windows of a split: (input_ids (B, T), target_ids (B, T + H - 1)), int64.

    `target_ids[:, i]` is the token after input i; the H - 1 columns past T continue the stream for
    the future-sight chunks of the last positions (H = `lookahead` = ModelConfig.lookahead; 1 for a
    plain GPT). Where they run past the end of the stream they hold pad_id (the loss leaves out any
    chunk containing pad or eos); the first T columns never do.

    Window starts are drawn uniformly from [0, len - T - 1], a range that depends on seq_len only,
    so a baseline and a FutureFormer given equally seeded generators read exactly the same inputs.
    `generator`: a torch.Generator or a numpy Generator (the same seed gives the same batches);
    None draws from torch's global generator.
    """
    stream = data.split(split)
    _check_window(stream, split, seq_len, lookahead, min_len=seq_len + 1)
    high = len(stream) - seq_len  # starts 0 .. len - T - 1: every next-token target lies in the stream
    if isinstance(generator, np.random.Generator):
        starts = generator.integers(0, high, size=batch_size)
    else:
        device = generator.device if generator is not None else "cpu"
        starts = torch.randint(high, (batch_size,), generator=generator, device=device).cpu().numpy()
    return _windows(stream, starts, seq_len, lookahead, data.pad_id)


def eval_batches(data: TokenData, split: str, batch_size: int, seq_len: int, lookahead: int = 1,
                 drop_last: bool = False):
    """Yield batches covering the whole split in fixed windows, deterministically, in stream order.

    Window j holds inputs stream[jT : jT + T], targets as in get_batch (same layout). The windows do
    not overlap and every id of the stream but the first is a next-token target exactly once. The
    last window is usually partial: its inputs and targets past the end are pad_id, so the NTP loss
    must ignore pad targets (cross_entropy ignore_index=pad_id), and to average over the split weigh
    each batch's mean loss by its count of real targets, `(targets[:, :T] != pad_id).sum()`.
    `drop_last=True` instead leaves out that partial window (fewer than T targets), so no input or
    NTP target is ever pad. The last batch may have fewer than `batch_size` rows.
    """
    stream = data.split(split)
    _check_window(stream, split, seq_len, lookahead, min_len=seq_len + 1 if drop_last else 2)
    n = len(stream)
    starts = np.arange(0, n - seq_len if drop_last else n - 1, seq_len)
    for i in range(0, len(starts), batch_size):
        yield _windows(stream, starts[i:i + batch_size], seq_len, lookahead, data.pad_id)
