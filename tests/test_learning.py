"""Learning: on one fixed batch of real TinyStories text, the baseline and a FutureFormer both drive the
next-token loss down by at least half within a few hundred steps."""

import os

import pytest
import torch

from config import ModelConfig
from modules.model import Model
from tools import SAMPLE_PATH, read_stories

pytestmark = pytest.mark.skipif(not os.path.exists(SAMPLE_PATH), reason=f"no TinyStories sample at {SAMPLE_PATH}")


def fixed_batch(batch_size=8, seq_len=64, lookahead=1):
    """Character-level ids of the first stories of the sample, wrapped in bos .. eos."""
    stories = read_stories(SAMPLE_PATH)[:40]
    alphabet = sorted(set("".join(stories)))
    vocab_len = len(alphabet)
    index = {ch: i for i, ch in enumerate(alphabet)}
    stream = []
    for s in stories:
        stream += [vocab_len] + [index[ch] for ch in s] + [vocab_len + 1]
    stream = torch.tensor(stream)
    starts = torch.arange(batch_size) * 300
    x = torch.stack([stream[s:s + seq_len] for s in starts])
    y = torch.stack([stream[s + 1:s + seq_len + lookahead] for s in starts])
    return vocab_len, x, y


@pytest.mark.parametrize("fs_periods", [0, 3])
def test_ntp_loss_halves_on_a_fixed_real_batch(fs_periods):
    torch.manual_seed(0)
    cfg = ModelConfig(dim=48, num_layers=4, num_q_heads=4, num_kv_heads=1, max_seq_len=64, dropout_rate=0.0,
                      fs_periods=fs_periods, vocab_len=fixed_batch()[0])
    vocab_len, x, y = fixed_batch(lookahead=cfg.lookahead)
    model = Model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or model.loss_parts["ntp_loss"]
    model.eval()
    with torch.no_grad():
        model(x, y)
    assert model.loss_parts["ntp_loss"] < first / 2, (first, model.loss_parts)
    if fs_periods:
        assert model.loss_parts["fs_loss_1"] < 0.9  # the future chunks are being learned too
