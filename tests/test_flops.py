"""modules/flops.py: the training-FLOPs estimate, against a count by hand and against PyTorch's own count of
the matrix multiplications a forward pass really does."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from config import ModelConfig, replace
from modules.flops import flops_breakdown, flops_per_token, training_flops
from modules.model import Model

SMALL = dict(dim=16, num_layers=3, num_q_heads=2, num_kv_heads=1, mlp_hidden_mult=3.0, vocab_len=29,
             max_seq_len=8, fs_periods=2, dropout_rate=0.0)


def test_flops_per_token_by_hand():
    """dim 16, 2 query heads and 1 kv head of 8, gated MLP of hidden int(2 * 48 / 3) = 32, vocabulary 29 + 3,
    windows of T = 8, two future chunks (+2..+3, +4..+7, one vector each) read by two future-sight layers
    (staggered: the first reads chunk 2, the second chunks 2 and 1), 'horizon' memory."""
    cfg = ModelConfig(**SMALL)
    layer_linear = 2 * 16 * (2 + 2) * 8 + 2 * 16 * 16 + 2 * 16 * 64 + 2 * 32 * 16     # qkv, Wo, MLP up, down
    layer_attention = 2 * 2 * 2 * 8 * (8 + 1) / 2                                     # mean keys (t + 1)
    window_3 = (1 + 2 + 3 * 6) / 8                 # mean of min(3, t + 1) over t < 8: keys of chunk 1's window
    window_7 = (1 + 2 + 3 + 4 + 5 + 6 + 7 + 7) / 8
    cross_1 = 512 + 512 + 2 * 16 * 2 * 8 * 1 + 2 * 2 * 16 * window_7               # Wq, Wo, memory k/v, attention
    cross_2 = 512 + 512 + 2 * 16 * 2 * 8 * 2 + 2 * 2 * 16 * (window_7 + window_3)
    heads = 2 * (2 * 16 * 16)
    output = 2 * 16 * 32
    forward = 3 * (layer_linear + layer_attention) + cross_1 + cross_2 + heads + output
    assert flops_per_token(cfg) == pytest.approx(3 * forward)
    parts = flops_breakdown(cfg)
    assert parts["cross_attention"]["attention"] == pytest.approx(2 * 2 * 16 * (2 * window_7 + window_3))
    assert training_flops(cfg, 1000) == pytest.approx(1000 * 3 * forward)
    # a plain GPT with the attention left out is the usual 6N over its matmul weights
    base = replace(cfg, fs_periods=0)
    matmul_params = 3 * (16 * 32 + 16 * 16 + 16 * 64 + 32 * 16) + 16 * 32
    assert flops_per_token(base, seq_len=1) - 3 * 3 * 2 * 2 * 2 * 8 == pytest.approx(6 * matmul_params)


def test_future_sight_layer_options_by_hand():
    """'joint' and 'dual' drop cross-attention's own query and output projections (16 x 16 each, per fs layer);
    a shared memory projects each of the 2 predictions' keys and values once (16 -> 2 x 8) instead of once per
    layer that reads it (1 + 2 = 3 projections, staggered)."""
    base = flops_per_token(ModelConfig(**SMALL))
    for attention in ("joint", "dual"):
        cfg = ModelConfig(**SMALL, fs_attention=attention)
        assert base - flops_per_token(cfg) == pytest.approx(3 * 2 * (2 * 2 * 16 * 16))
    shared = ModelConfig(**SMALL, fs_shared_memory_kv=True)
    assert base - flops_per_token(shared) == pytest.approx(3 * (3 - 2) * 2 * 16 * 2 * 8)
    assert flops_per_token(ModelConfig(**SMALL, fs_attention="parallel", fs_head_norm=False)) == pytest.approx(base)


def test_memory_modes_and_arrangements_count_their_keys():
    cfg = ModelConfig(**SMALL)
    keys = {m: flops_breakdown(replace(cfg, fs_memory=m))["cross_attention"]["attention"] / (2 * 2 * 16)
            for m in ("horizon", "self", "causal")}
    assert keys["self"] == pytest.approx(1 + 2)             # layer 1: chunk 2's vector; layer 2: both
    assert keys["causal"] == pytest.approx(3 * 4.5)        # every earlier prediction: (T + 1) / 2 on average
    parallel = flops_breakdown(replace(cfg, fs_arrangement="parallel"))["cross_attention"]
    staggered = flops_breakdown(cfg)["cross_attention"]
    assert parallel["linear"] > staggered["linear"] and parallel["attention"] > staggered["attention"]


@pytest.mark.parametrize("overrides", [dict(fs_periods=0), dict(fs_loss="bce"),
                                       dict(fs_loss="bce", fs_output_layer="mlp", fs_arrangement="parallel"),
                                       dict(fs_loss="bce", compress_freq="constant", compress_freq_n=2,
                                            weight_tying=False, mlp_gated=False),
                                       dict(fs_loss="bce", fs_attention="parallel"),
                                       dict(fs_loss="rank", compress_freq="linear", compress_freq_n=1),
                                       dict(fs_loss="bce", fs_attention="joint", fs_shared_memory_kv=True),
                                       dict(fs_loss="bce", fs_attention="dual", fs_shared_memory_kv=True,
                                            fs_head_norm=False, fs_arrangement="parallel")])
def test_linear_layers_match_pytorchs_count(overrides):
    """torch's FlopCounterMode counts every matmul a forward pass does; the estimate's linear-layer part must
    equal its count of the linear layers (mm, addmm) exactly. (fs_loss='bce' because the cosine loss logs a
    target-diversity matrix, a diagnostic the estimate leaves out.)"""
    cfg = ModelConfig(**{**SMALL, "max_seq_len": 32, "vocab_len": 61, **overrides})
    model = Model(cfg)
    B, T = 2, 32
    x = torch.randint(0, cfg.vocab_len, (B, T))
    y = torch.randint(0, cfg.vocab_len, (B, T + cfg.lookahead - 1))
    with FlopCounterMode(display=False) as counter:
        model(x, y)
    counts = counter.get_flop_counts()["Global"]
    linear = sum(v for op, v in counts.items() if str(op).split(".")[1] in ("mm", "addmm"))
    estimate = sum(p["linear"] for p in flops_breakdown(cfg, T).values())
    assert linear == pytest.approx(estimate * B * T)
