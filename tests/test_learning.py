"""Learning: on one fixed batch of real TinyStories text (the sample, bpe_v2 at 1024 tokens), the baseline
and a FutureFormer both drive the next-token loss down by at least half within a few hundred steps."""

import os

import pytest
import torch

from config import ModelConfig
from modules.model import Model
from tools import SAMPLE_PATH, get_tokenizer, read_stories

pytestmark = pytest.mark.skipif(not os.path.exists(SAMPLE_PATH), reason=f"no TinyStories sample at {SAMPLE_PATH}")


def fixed_batch(tok, batch_size=8, seq_len=64, lookahead=1):
    """Windows of the first stories of the sample, each story wrapped in bos .. eos."""
    stream = []
    for story in read_stories(SAMPLE_PATH)[:30]:
        stream += tok.encode(story, bos=True, eos=True)
    stream = torch.tensor(stream)
    starts = torch.arange(batch_size) * (seq_len + 20)
    x = torch.stack([stream[s:s + seq_len] for s in starts])
    y = torch.stack([stream[s + 1:s + seq_len + lookahead] for s in starts])
    return x, y


@pytest.mark.parametrize("fs_periods", [0, 3])
def test_ntp_loss_halves_on_a_fixed_real_batch(fs_periods):
    torch.manual_seed(0)
    tok = get_tokenizer("bpe_v2", 1024)
    cfg = ModelConfig(dim=48, num_layers=4, num_q_heads=4, num_kv_heads=1, max_seq_len=64, dropout_rate=0.0,
                      fs_periods=fs_periods, vocab_len=tok.vocab_len)
    x, y = fixed_batch(tok, lookahead=cfg.lookahead)
    model = Model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    with torch.no_grad():
        model(x, y)
    first = model.loss_parts
    for _ in range(300):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if model.loss_parts["ntp_loss"] < first["ntp_loss"] / 3:
            break
    model.eval()
    with torch.no_grad():
        model(x, y)
    assert model.loss_parts["ntp_loss"] < first["ntp_loss"] / 2, (first, model.loss_parts)
    for k in range(1, fs_periods + 1):  # the future chunks are learned too
        assert model.loss_parts[f"fs_loss_{k}"] < 0.9 * first[f"fs_loss_{k}"], (first, model.loss_parts)
