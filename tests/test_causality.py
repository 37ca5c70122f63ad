"""Causality and cache equality for every option combination (a seeded sample of tiny configs).

Causality: changing input token j leaves the logits at every position < j unchanged, and passing
targets leaves the logits unchanged (eval mode, fp32, tolerance 1e-5). Cache: feeding a sequence
through the KV cache and the cached future memory (a prefill chunk, a chunk after it, then token by
token) gives the logits of one full forward pass (tolerance 1e-4), in a growing cache and in the preallocated
buffers of a static cache (the compiled decoding step's), before and after its reset.
"""

import itertools

import pytest
import torch
from model_configs import DIM, MAX_SEQ_LEN, OPTIONS, VOCAB_LEN, option_values, sample_configs

import config
from modules.model import Model

CONFIGS = sample_configs(120)
FS_ONLY = {"fs_loss", "fs_arrangement", "fs_memory", "fs_output_layer", "fs_cross_rope", "fs_detach_targets",
           "pool_type", "pre_pool_norm", "pool_output_linear", "pool_bias", "compress", "ca_heads", "fs_mult",
           "fs_loss_lambda", "fs_attention", "fs_shared_memory_kv", "fs_head_norm", "fs_lambda_schedule",
           "fs_lambda_end"}
T = 24


def _ids(cfg):
    return (f"P{cfg.fs_periods}-{cfg.fs_arrangement}-{cfg.fs_memory}-{cfg.fs_attention}"
            f"{'-sharedkv' if cfg.fs_shared_memory_kv else ''}-{cfg.fs_output_layer}-{cfg.pool_type}")


def test_sample_covers_every_value_of_every_option():
    assert len(CONFIGS) >= 100
    for name, values in OPTIONS.items():
        pool = [c for c in CONFIGS if c.fs_periods > 0] if name in FS_ONLY else CONFIGS
        seen = {option_values(c)[name] for c in pool}
        missing = [v for v in values if v not in seen]
        assert not missing, f"{name}: values {missing} never tested"


def _model(cfg, seed):
    torch.manual_seed(seed)
    return Model(cfg).eval()


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(CONFIGS)), ids=[f"{i}-{_ids(c)}" for i, c in enumerate(CONFIGS)])
def test_causal_and_cache_equals_full(i):
    check_causal_and_cache(CONFIGS[i], i)


# every way a future-sight layer reads the memory, with every memory mode and arrangement (the sample above
# varies them too, but need not meet every combination); three vectors per chunk for half of them
LAYER_COMBOS = list(itertools.product(config.FS_ATTENTIONS, config.FS_MEMORIES, config.FS_ARRANGEMENTS,
                                      [False, True]))


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(LAYER_COMBOS)), ids=["-".join(map(str, c)) for c in LAYER_COMBOS])
def test_every_memory_reading_with_every_mode_and_arrangement(i):
    attention, memory, arrangement, shared = LAYER_COMBOS[i]
    cfg = config.ModelConfig(dim=DIM, num_layers=4, num_q_heads=4, num_kv_heads=2, fs_periods=2, fs_mult=3,
                             max_seq_len=MAX_SEQ_LEN, vocab_len=VOCAB_LEN, dropout_rate=0.0, fs_attention=attention,
                             fs_memory=memory, fs_arrangement=arrangement, fs_shared_memory_kv=shared,
                             compress_freq_n=1 + 2 * (i % 2))
    check_causal_and_cache(cfg, i)


def check_causal_and_cache(cfg, i):
    model = _model(cfg, i)
    g = torch.Generator().manual_seed(i)
    x = torch.randint(0, cfg.vocab_size, (2, T), generator=g)
    y = torch.randint(0, cfg.vocab_len + 2, (2, T + cfg.lookahead - 1), generator=g)  # eos included
    model.loss_fn.set_progress(i % 5 / 4)  # a scheduled weight somewhere along the run: it weighs the loss only
    with torch.no_grad():
        logits, _ = model(x)
        logits_t, loss = model(x, y)
        assert torch.isfinite(loss)
        torch.testing.assert_close(logits_t, logits, atol=1e-5, rtol=0, msg="targets changed the logits")
        for j in (1 + i % (T - 1), T - 1):
            x2 = x.clone()
            x2[:, j] = (x2[:, j] + 1) % cfg.vocab_size
            logits2, _ = model(x2)
            torch.testing.assert_close(logits2[:, :j], logits[:, :j], atol=1e-5, rtol=0,
                                       msg=f"changing token {j} changed earlier logits")
            assert (logits2[:, j] - logits[:, j]).abs().max() > 1e-4, "the changed token had no effect"
        # cache: a prefill chunk of p tokens, a chunk of 1-4 more after them, then one token at a time; the same
        # in the preallocated buffers of a static cache (what a compiled decoding step uses), after a reset too
        for static in (False, True):
            cache, p, q = model.new_cache(static=static), 1 + i % 7, 1 + i % 4
            for _ in range(1 + static):
                if static:
                    cache.reset()
                parts = [model(x[:, :p], cache=cache)[0], model(x[:, p:p + q], cache=cache)[0]]
                parts += [model(x[:, t:t + 1], cache=cache)[0] for t in range(p + q, T)]
                assert int(cache.pos) == T
                torch.testing.assert_close(torch.cat(parts, 1), logits, atol=1e-4, rtol=0,
                                           msg=f"cached logits (static={static}) differ from the full forward pass")
