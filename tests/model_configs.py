"""A seeded sample of tiny model configurations covering every value of every option.

Each option cycles through its values in a shuffled order, so every value appears within a few
configurations while the combinations stay varied; invalid combinations are mended in a way that
keeps every value represented (tests/test_causality.py checks the coverage).
"""

import random

import config
from config import ModelConfig

OPTIONS = {
    "norm_type": list(config.NORM_TYPES),
    "norm_affine": [True, False],
    "norm_bias": [False, True],
    "mlp_nonlinearity": list(config.NONLINEARITIES),
    "mlp_gated": [True, False],
    "mlp_bias": [False, True],
    "heads": [(2, 1), (2, 2), (4, 2), (4, 1), (4, 4)],  # (num_q_heads, num_kv_heads): MQA, MHA, GQA
    "scale_first_resid": [True, False],
    "second_resid_norm": [False, True],
    "weight_tying": [True, False],
    "dropout_rate": [0.0, 0.1],
    "fs_mult": [2, 3, 4],
    "fs_periods": [0, 1, 2, 3],
    "fs_loss": list(config.FS_LOSSES),
    "fs_arrangement": list(config.FS_ARRANGEMENTS),
    "fs_memory": list(config.FS_MEMORIES),
    "fs_output_layer": list(config.FS_OUTPUT_LAYERS),
    "fs_cross_rope": [True, False],
    "fs_attention": list(config.FS_ATTENTIONS),
    "fs_shared_memory_kv": [False, True],
    "fs_head_norm": [True, False],
    "fs_detach_targets": [True, False],
    "pool_type": list(config.POOL_TYPES),
    "pre_pool_norm": [True, False],
    "pool_output_linear": [False, True],
    "pool_bias": [False, True],
    "compress": [("constant", 1), ("linear", 0.5), ("root", 2), ("log", 2), ("poly", 0.5), ("constant", 2),
                 ("linear", 1), ("poly", 1)],
    "ca_heads": [(None, None, None), (2, 1, 8), (4, 2, 6)],  # (ca_num_q_heads, ca_num_kv_heads, ca_head_dim)
    # numeric settings: a few values each, an explicit head_dim that does not divide dim among them
    "head_dim": [None, 6],
    "theta": [10_000.0, 500.0],
    "mlp_hidden_mult": [2.0, 1.5],
    "fs_loss_lambda": [0.5, 0.0, 1.0],
    "fs_lambda_schedule": list(config.FS_LAMBDA_SCHEDULES),
    "fs_lambda_end": [1.0, 0.5],
    "eps": [1e-6, 1e-5],
}

DIM, VOCAB_LEN, MAX_SEQ_LEN = 16, 29, 64


def _build(choice: dict) -> ModelConfig:
    q, kv = choice["heads"]
    ca_q, ca_kv, ca_hd = choice["ca_heads"]
    freq, n = choice["compress"]
    return ModelConfig(
        dim=DIM, num_layers=choice["fs_periods"] + 1 + choice["extra_layers"], num_q_heads=q, num_kv_heads=kv,
        head_dim=choice["head_dim"], theta=choice["theta"], eps=choice["eps"],
        max_seq_len=MAX_SEQ_LEN, vocab_len=VOCAB_LEN, mlp_hidden_mult=choice["mlp_hidden_mult"],
        norm_type=choice["norm_type"], norm_affine=choice["norm_affine"],
        norm_bias=choice["norm_bias"] and choice["norm_affine"],
        mlp_nonlinearity=choice["mlp_nonlinearity"], mlp_gated=choice["mlp_gated"], mlp_bias=choice["mlp_bias"],
        scale_first_resid=choice["scale_first_resid"], second_resid_norm=choice["second_resid_norm"],
        weight_tying=choice["weight_tying"], dropout_rate=choice["dropout_rate"],
        fs_mult=choice["fs_mult"], fs_periods=choice["fs_periods"], fs_loss=choice["fs_loss"],
        fs_loss_lambda=choice["fs_loss_lambda"], fs_lambda_schedule=choice["fs_lambda_schedule"],
        fs_lambda_end=choice["fs_lambda_end"], fs_arrangement=choice["fs_arrangement"], fs_memory=choice["fs_memory"],
        fs_output_layer=choice["fs_output_layer"], fs_cross_rope=choice["fs_cross_rope"],
        fs_attention=choice["fs_attention"], fs_shared_memory_kv=choice["fs_shared_memory_kv"],
        fs_head_norm=choice["fs_head_norm"],
        fs_detach_targets=choice["fs_detach_targets"], pool_type=choice["pool_type"],
        pre_pool_norm=choice["pre_pool_norm"], pool_output_linear=choice["pool_output_linear"],
        pool_bias=choice["pool_bias"], compress_freq=freq, compress_freq_n=n,
        ca_num_q_heads=ca_q, ca_num_kv_heads=ca_kv, ca_head_dim=ca_hd)


def sample_configs(n: int = 120, seed: int = 0) -> list[ModelConfig]:
    rng = random.Random(seed)
    orders = {name: rng.sample(values, len(values)) for name, values in OPTIONS.items()}
    out = []
    for i in range(n):
        choice = {name: order[(i + rng.randrange(2)) % len(order)] for name, order in orders.items()}
        choice["extra_layers"] = rng.randrange(2)
        learned = choice["pool_type"] in config.LEARNED_POOL_TYPES or choice["pool_output_linear"]
        if choice["fs_loss"] in config.VOCAB_FS_LOSSES and learned:  # no pooler: keep the loss, drop the pooler
            choice["pool_type"], choice["pool_output_linear"] = rng.choice(["sum", "mean", "max"]), False
        elif learned:  # a learned pooler needs gradient through the targets
            choice["fs_detach_targets"] = False
        if choice["fs_attention"] in ("joint", "dual"):  # these read the memory with self-attention's heads
            choice["ca_heads"] = (None, None, None)
        for _ in range(20):  # a compression schedule must divide every chunk: try others if it does not
            try:
                cfg = _build(choice)
                break
            except ValueError as e:
                if "compress_freq" not in str(e):
                    raise
                choice["compress"] = rng.choice(OPTIONS["compress"])
        else:
            choice["compress"] = ("constant", 1)
            cfg = _build(choice)
        out.append(cfg)
    return out


def option_values(cfg: ModelConfig) -> dict:
    """The OPTIONS values a config realises (for the coverage check)."""
    return {
        **{name: getattr(cfg, name) for name in OPTIONS if hasattr(cfg, name)},
        "head_dim": None if cfg.head_dim * cfg.num_q_heads == cfg.dim else cfg.head_dim,
        "heads": (cfg.num_q_heads, cfg.num_kv_heads),
        "compress": (cfg.compress_freq, cfg.compress_freq_n),
        "ca_heads": ca if (ca := (cfg.ca_num_q_heads, cfg.ca_num_kv_heads, cfg.ca_head_dim))
        in OPTIONS["ca_heads"] else (None, None, None),  # derived from the self-attention settings
    }
