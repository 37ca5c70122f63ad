"""config.py: derived fields, round trips, and every ValueError path (each names field, value, allowed)."""

import dataclasses
import json

import pytest

from config import ModelConfig, TrainConfig, from_dict, to_dict


def test_defaults_and_derived_fields():
    cfg = ModelConfig()
    assert cfg.head_dim == cfg.dim // cfg.num_q_heads
    assert (cfg.ca_num_q_heads, cfg.ca_num_kv_heads, cfg.ca_head_dim) == (cfg.num_q_heads, cfg.num_kv_heads,
                                                                          cfg.head_dim)
    assert cfg.vocab_size == cfg.vocab_len + 3
    assert ModelConfig(fs_mult=2, fs_periods=3).chunk_offsets == [(2, 3), (4, 7), (8, 15)]
    assert ModelConfig(fs_mult=3, fs_periods=3).chunk_offsets == [(2, 4), (5, 13), (14, 40)]
    assert ModelConfig(fs_mult=4, fs_periods=3).chunk_offsets[-1] == (22, 85)
    assert ModelConfig(fs_mult=3, fs_periods=3).lookahead == 40
    assert ModelConfig(fs_periods=0).lookahead == 1
    assert ModelConfig(compress_freq="linear", compress_freq_n=0.5, fs_periods=3).chunk_vectors == [1, 1, 2]
    tc = TrainConfig(max_iters=1000)
    assert (tc.warmup_iters, tc.final_flat_iters) == (50, 100)
    assert TrainConfig(max_iters=1000, warmup_iters=7).warmup_iters == 7


@pytest.mark.parametrize("cls,kw", [(ModelConfig, {"dim": 64, "num_q_heads": 2, "fs_periods": 2}),
                                    (TrainConfig, {"max_iters": 300, "data_path": "x.txt"})])
def test_json_round_trip_keeps_derived_values(cls, kw):
    cfg = cls(**kw)
    saved = json.loads(json.dumps(to_dict(cfg)))
    assert from_dict(cls, saved) == cfg
    if cls is ModelConfig:
        assert saved["head_dim"] == 32
        # a derived value that was saved reloads unchanged even if the rule that derived it would differ
        assert from_dict(cls, {**saved, "dim": 128}).head_dim == 32
    with pytest.raises(ValueError, match="unknown"):
        from_dict(cls, {**saved, "dimm": 3})


def test_every_field_is_annotated_and_commented():
    src = open(ModelConfig.__module__ + ".py").read()
    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            if f.name.startswith("ca_"):
                continue  # documented as a group
            line = next(line for line in src.splitlines() if line.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{cls.__name__}.{f.name} has no teaching comment"


BAD_MODEL = [
    ({"norm_type": "BatchNorm"}, "norm_type", "RMSNorm"),
    ({"mlp_nonlinearity": "Tanh"}, "mlp_nonlinearity", "SiLU"),
    ({"pool_type": "median"}, "pool_type", "self_attention"),
    ({"fs_loss": "kl"}, "fs_loss", "cosine"),
    ({"fs_arrangement": "serial"}, "fs_arrangement", "staggered"),
    ({"fs_memory": "all"}, "fs_memory", "horizon"),
    ({"fs_output_layer": "conv"}, "fs_output_layer", "linear"),
    ({"compress_freq": "exp"}, "compress_freq", "constant"),
    ({"num_q_heads": 3}, "num_q_heads", "divide dim"),
    ({"num_kv_heads": 3}, "num_kv_heads", "divide num_q_heads"),
    ({"head_dim": 7}, "head_dim", "even"),
    ({"ca_num_q_heads": 3}, "ca_num_q_heads", "divide dim"),
    ({"ca_num_q_heads": 4, "ca_num_kv_heads": 3}, "ca_num_kv_heads", "divide ca_num_q_heads"),
    ({"ca_head_dim": 5}, "ca_head_dim", "even"),
    ({"fs_mult": 4, "fs_periods": 3, "max_seq_len": 32}, "fs_periods", "max_seq_len=32"),
    ({"num_layers": 3, "fs_periods": 3}, "num_layers", "greater than fs_periods=3"),
    ({"compress_freq_n": 3}, "compress_freq_n", "divide 2"),
    ({"compress_freq_n": 4}, "compress_freq_n", "between 1 and 2"),  # more vectors than the chunk has tokens
    ({"compress_freq": "linear", "compress_freq_n": 1}, "compress_freq_n", "divide 8"),
    ({"compress_freq": "log", "compress_freq_n": 1.5}, "compress_freq_n", "base n >= 2"),
    ({"compress_freq_n": 0}, "compress_freq_n", "> 0"),
    ({"pool_type": "attention"}, "fs_detach_targets", "fs_detach_targets=False"),
    ({"pool_output_linear": True}, "fs_detach_targets", "parameter-free"),
    ({"pool_type": "conv", "fs_detach_targets": False, "fs_loss": "bce"}, "pool_type", "bce"),
    ({"norm_bias": True, "norm_affine": False}, "norm_bias", "norm_affine"),
    ({"dropout_rate": 1.0}, "dropout_rate", "< 1"),
    ({"dropout_rate": -0.1}, "dropout_rate", ">= 0"),
    ({"dim": 0}, "dim", ">= 1"),
    ({"dim": 64.0}, "dim", "int"),
    ({"num_layers": True}, "num_layers", "int"),
    ({"fs_periods": -1}, "fs_periods", ">= 0"),
    ({"fs_mult": 1}, "fs_mult", ">= 2"),
    ({"fs_loss_lambda": -1}, "fs_loss_lambda", ">= 0"),
    ({"fs_lambda_schedule": "cosine"}, "fs_lambda_schedule", "reverse"),
    ({"fs_lambda_end": 0}, "fs_lambda_end", "> 0"),
    ({"fs_lambda_end": 1.5}, "fs_lambda_end", "<= 1"),
    ({"pool_type": "flatten", "fs_detach_targets": False, "fs_loss": "rank"}, "pool_type", "rank"),
    ({"theta": 0}, "theta", "> 0"),
    ({"eps": 0}, "eps", "> 0"),
    ({"vocab_len": 70_000}, "vocab_len", "uint16"),
    ({"tokenizer": "bpe_v9"}, "tokenizer", "bpe_v2"),
]


@pytest.mark.parametrize("kw,field,allowed", BAD_MODEL, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(BAD_MODEL)])
def test_model_config_errors_name_field_value_and_allowed(kw, field, allowed):
    with pytest.raises(ValueError) as err:
        ModelConfig(**kw)
    msg = str(err.value)
    assert msg.startswith(f"{field}="), msg
    assert allowed in msg, msg
    if field in kw:
        assert f"{field}={kw[field]!r}" in msg, msg


def test_learned_poolers_are_fine_with_trained_targets():
    for pool_type in ("parametric_sum", "parametric_max", "flatten", "conv", "attention", "self_attention"):
        ModelConfig(pool_type=pool_type, fs_detach_targets=False)
    ModelConfig(pool_output_linear=True, fs_detach_targets=False)
    ModelConfig(fs_periods=0, pool_type="attention")  # no future sight: the pool options do not matter


BAD_TRAIN = [
    ({"batch_size": 0}, "batch_size", ">= 1"),
    ({"model_name": "../x"}, "model_name", "plain folder name"),
    ({"model_name": "a\nb"}, "model_name", "control character"),
    ({"model_name": "run\t1"}, "model_name", "control character"),
    ({"max_iters": 2.5}, "max_iters", "int"),
    ({"anneal_type": "exp"}, "anneal_type", "cos"),
    ({"device": "tpu"}, "device", "cuda"),
    ({"lr_min": 1.0, "lr_max": 0.1}, "lr_min", "lr_max"),
    ({"warmup_iters": 90, "final_flat_iters": 20, "max_iters": 100}, "warmup_iters", "max_iters=100"),
    ({"val_fraction": 0.0}, "val_fraction", "> 0"),
    ({"checkpoint_interval": 0}, "checkpoint_interval", ">= 1"),
    ({"T_mult": 0}, "T_mult", "> 0"),
    ({"num_restarts": -1}, "num_restarts", ">= 0"),
    ({"grad_clip": -1}, "grad_clip", ">= 0"),
    ({"ema_decay": 1.0}, "ema_decay", "< 1"),
    ({"ema_save_last": True}, "ema_save_last", "needs ema_decay"),
    ({"ema_decay": 0.9, "ema_save_last": "yes"}, "ema_save_last", "true or false"),
]


@pytest.mark.parametrize("kw,field,allowed", BAD_TRAIN, ids=[f for _, f, _ in BAD_TRAIN])
def test_train_config_errors(kw, field, allowed):
    with pytest.raises(ValueError) as err:
        TrainConfig(**kw)
    assert str(err.value).startswith(f"{field}=") and allowed in str(err.value), str(err.value)


def test_replace_derives_again_what_was_derived():
    from config import replace

    m = replace(ModelConfig(), dim=64)
    assert m.head_dim == 16 and m.ca_head_dim == 16  # dataclasses.replace would keep 32 from dim=128
    assert replace(ModelConfig(head_dim=8), dim=64).head_dim == 8  # a value that was set stays set
    t = replace(TrainConfig(), max_iters=100)
    assert (t.warmup_iters, t.final_flat_iters) == (5, 10)
    assert replace(t, max_iters=100) == t
    with pytest.raises(ValueError, match="dim=0"):
        replace(ModelConfig(), dim=0)


def test_a_train_config_saved_before_precision_loads_with_its_meaning():
    """Saved runs have `bf16` (true: bf16 autocast on CUDA only, which is precision None; false: fp32)."""
    saved = {k: v for k, v in to_dict(TrainConfig()).items() if k != "precision"}
    assert from_dict(TrainConfig, {**saved, "bf16": True}).precision is None
    assert from_dict(TrainConfig, {**saved, "bf16": False}).precision == "fp32"
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        from_dict(TrainConfig, {**saved, "bf16": True, "precision": "auto"})
