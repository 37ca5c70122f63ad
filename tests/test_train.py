"""train.py: the learning-rate schedule, command-line overrides, and real tiny runs on the TinyStories
sample (the loss falls, the run folder is written and reloads to identical logits, runs are reproducible
and resume exactly, nothing is overwritten)."""

import math
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL, needs_sample, tiny_configs

import hardware
import tools
from config import ModelConfig, TrainConfig, parse_overrides, replace
from modules.flops import flops_per_token
from modules.model import Model
from optimizer import lr_at, lr_schedule
from runs import Run, load_checkpoint, log_columns, run_flops, save_run
from train import match_flops, train, train_seeds

# ---------------------------------------------------------------- learning-rate schedule


def test_lr_schedule_warmup_anneal_flat():
    t = TrainConfig(max_iters=1000, warmup_iters=100, final_flat_iters=200, lr_init=1e-5, lr_max=1e-3, lr_min=1e-4)
    lrs = lr_schedule(t)
    assert len(lrs) == 1000
    assert lrs[0] == pytest.approx(1e-5) and lrs[100] == pytest.approx(1e-3)
    assert lrs[50] == pytest.approx((1e-5 + 1e-3) / 2)                       # linear warm-up
    assert all(a < b for a, b in zip(lrs[:100], lrs[1:101]))
    assert all(a >= b for a, b in zip(lrs[100:800], lrs[101:801]))            # annealing only goes down
    assert lrs[450] == pytest.approx((1e-3 + 1e-4) / 2)                      # cosine: half-way at mid-cycle
    assert all(lr == pytest.approx(1e-4) for lr in lrs[800:])                # the flat stretch


def test_lr_schedule_linear_and_restarts():
    lin = TrainConfig(max_iters=300, warmup_iters=0, final_flat_iters=0, anneal_type="lin", lr_max=1.0, lr_min=0.0)
    assert lr_at(150, lin) == pytest.approx(0.5) and lr_at(75, lin) == pytest.approx(0.75)
    # two restarts, T_mult 2: cycles of 100, 200, 400 steps after a warm-up of 50, each starting at lr_max
    t = TrainConfig(max_iters=750, warmup_iters=50, final_flat_iters=0, num_restarts=2, T_mult=2.0,
                    lr_init=0.0, lr_max=1.0, lr_min=0.0)
    lrs = lr_schedule(t)
    for start in (50, 150, 350):
        assert lrs[start] == pytest.approx(1.0), start
    for end in (149, 349, 749):
        assert lrs[end] < 0.01, end
    assert lrs[100] == pytest.approx(0.5) and lrs[250] == pytest.approx(0.5) and lrs[550] == pytest.approx(0.5)
    assert max(lrs) == pytest.approx(1.0) and min(lrs) >= 0.0


# ---------------------------------------------------------------- overrides


def test_overrides_convert_types_and_reject_unknown_keys():
    (m, t), extra = parse_overrides(["--dim=64", "--fs_periods", "0", "--compile", "--lr_max=3e-4",
                                     "--warmup_iters=None", "--max_iters=1e3", "--resume=a.pt"],
                                    ModelConfig, TrainConfig, extra={"resume": str})
    assert m == {"dim": 64, "fs_periods": 0}
    assert t == {"compile": True, "lr_max": 3e-4, "warmup_iters": None, "max_iters": 1000}
    assert extra == {"resume": "a.pt"} and isinstance(m["dim"], int)
    with pytest.raises(ValueError, match="did you mean --max_iters"):
        parse_overrides(["--max_iter=5"], ModelConfig, TrainConfig)
    with pytest.raises(ValueError, match="dim='6.5' is not allowed: must be an integer"):
        parse_overrides(["--dim=6.5"], ModelConfig, TrainConfig)
    with pytest.raises(ValueError, match="must be a bool"):
        parse_overrides(["--compile=perhaps"], ModelConfig, TrainConfig)
    with pytest.raises(ValueError, match="--key=value"):
        parse_overrides(["dim=6"], ModelConfig, TrainConfig)


def run_cli(*args, cwd=tools.REPO_DIR):
    return subprocess.run([sys.executable, os.path.join(tools.REPO_DIR, "train.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_bad_overrides_are_clear_errors():
    out = run_cli("--learning_rate=1e-3")
    assert out.returncode == 2 and "unknown option --learning_rate" in out.stderr
    assert "Traceback" not in out.stderr
    out = run_cli("--pool_type=avg")
    assert out.returncode == 2 and "pool_type='avg' is not allowed" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_cli_help_lists_every_field_with_its_default_and_comment():
    import dataclasses

    for flag in ("--help", "-h"):
        out = run_cli("--max_iters=3", flag)
        assert out.returncode == 0 and out.stderr == "" and out.stdout.startswith("usage: python train.py")
    text = out.stdout
    for cls in (ModelConfig, TrainConfig):
        for f in dataclasses.fields(cls):
            line = next((ln for ln in text.splitlines() if ln.strip().startswith(f"--{f.name}=")), None)
            assert line is not None, f.name
            assert line.split()[0] == f"--{f.name}={f.default}"
            assert len(line.split(maxsplit=1)) == 2, f"{f.name} has no comment"
    assert "  --dim=128" in text and "residual stream width" in text  # the comment in config.py
    assert text.index("ModelConfig: future sight") < text.index("--fs_periods=3") < text.index("\nTrainConfig\n")
    assert "TrainConfig: data" in text and "--seeds=0,1,2" in text and "--resume=CHECKPOINT" in text


@pytest.mark.slow
def test_cli_flag_given_twice_is_an_error():
    out = run_cli("--dim=64", "--max_iters=3", "--dim=32")
    assert out.returncode == 2 and "--dim is given twice" in out.stderr and "Traceback" not in out.stderr
    with pytest.raises(ValueError, match="given twice"):
        parse_overrides(["--compile", "--compile=false"], ModelConfig, TrainConfig)


@pytest.mark.slow
def test_cli_missing_data_file_is_a_clear_error(tmp_path):
    out = run_cli(f"--data_path={tmp_path / 'nope.txt'}", "--max_iters=2", f"--trained_dir={tmp_path}")
    assert out.returncode == 2 and "nope.txt" in out.stderr and "not found" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- real tiny runs


@needs_sample
def test_tiny_run_learns_and_writes_its_folder(tiny_runs):
    run = tiny_runs["tiny_ff"]
    assert isinstance(run, Run) and os.path.basename(run.path) == "tiny_ff"
    written = sorted(f for f in os.listdir(run.path) if f != "scores")  # scores/: model_comparison's cache
    assert written == sorted(tools.SAVED_FILES)
    log = tools.read_log("tiny_ff", tiny_runs["trained_dir"])
    assert list(log.columns) == log_columns(run.model_cfg)
    assert "val_fs_loss_2" in log.columns and "val_fs_target_cos_1" in log.columns
    assert list(log["step"]) == [10, 20, 30, 40] and list(log["full_val"]) == [0, 0, 0, 1]
    assert list(log["tokens"]) == [s * 8 * 64 for s in (10, 20, 30, 40)]
    assert log["val_ntp_loss"].iloc[-1] < log["val_ntp_loss"].iloc[0] - 0.15   # it learns: from ln(1027) = 6.93
    assert log["val_ntp_loss"].iloc[-1] < math.log(run.model_cfg.vocab_size) - 0.8  # to about 5.9 in 40 steps
    assert (log["tokens_per_s"] > 0).all() and log["elapsed_s"].is_monotonic_increasing
    assert log["val_bpb"].iloc[-1] == pytest.approx(
        tools.bits_per_byte(log["val_ntp_loss"].iloc[-1], tools.get_data(run.model_cfg, run.train_cfg).meta["val"]
                            ["bytes_per_token"]), rel=1e-4)
    assert (log["val_ppl"] - log["val_ntp_loss"].map(math.exp)).abs().max() < 1e-2 * log["val_ppl"].max()
    assert (log["val_loss"] > log["val_ntp_loss"]).all()  # the total includes the future-sight terms
    base = tools.read_log("tiny_base", tiny_runs["trained_dir"])
    assert not any("fs_" in c for c in base.columns) and (base["val_loss"] == base["val_ntp_loss"]).all()


@pytest.mark.slow
@needs_sample
def test_saved_run_reloads_to_identical_logits_and_the_last_row_recomputes(tiny_runs):
    from scoring import evaluate_split

    run = tiny_runs["tiny_ff"]
    model, tok, mcfg = tools.load_model("tiny_ff", tiny_runs["trained_dir"])
    assert mcfg == run.model_cfg and tok.vocab_len == mcfg.vocab_len
    assert tools.load_configs("tiny_ff", tiny_runs["trained_dir"])[1] == run.train_cfg
    x = torch.tensor([tok.encode("Once upon a time, there was a dog.")])
    with torch.no_grad():
        assert torch.equal(model(x)[0], run.model(x)[0])
    data = tools.get_data(mcfg, run.train_cfg)
    parts = evaluate_split(model, data, "val", mcfg, batch_size=5, device="cpu")  # another batching
    assert parts["ntp_loss"] == pytest.approx(run.log[-1]["val_ntp_loss"], rel=1e-4)
    # and it writes: greedy text from the reloaded model, the same as from the one in memory
    from inference import generate

    text = generate("Once upon a time", model, tok, max_gen_len=20, temperature=0)
    assert text.startswith("Once upon a time") and len(text) > len("Once upon a time")
    assert text == generate("Once upon a time", run.model, tok, max_gen_len=20, temperature=0)


@needs_sample
def test_missing_model_name_lists_the_near_matches(tiny_runs):
    with pytest.raises(FileNotFoundError, match="Did you mean 'tiny_ff'"):
        tools.load_model("tiny_f", tiny_runs["trained_dir"])


@pytest.mark.slow
@needs_sample
def test_runs_are_reproducible_and_never_overwritten(tiny_runs, data_cache_dir, tmp_path):
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=2, model_name="tiny_ff")
    with pytest.raises(FileExistsError, match="never overwritten"):
        train(mcfg, tcfg, trained_dir=tiny_runs["trained_dir"], progress=False)
    again = train(mcfg, tcfg, save=False, progress=False)  # same seed, same config: the same numbers on CPU
    timing = {"elapsed_s", "tokens_per_s"}
    for a, b in zip(again.log, tiny_runs["tiny_ff"].log):
        assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    # the default name says what it is, and a second run of it gets a new folder
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, max_iters=2, eval_interval=2)
    first = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    second = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    assert os.path.basename(first.path).startswith("baseline_0.08m_20")
    assert second.path != first.path and os.path.isfile(os.path.join(first.path, "model.pth"))
    for run in (first, second):  # a run's config records the name it was saved under, the default one too
        name = os.path.basename(run.path)
        assert run.train_cfg.model_name == name == tools.load_configs(name, str(tmp_path))[1].model_name
    # save=False writes nothing until save_run
    unsaved = train(mcfg, tcfg, save=False, progress=False)
    assert unsaved.path is None
    path = save_run(unsaved, str(tmp_path), model_name="later")
    assert sorted(os.listdir(path)) == sorted(tools.SAVED_FILES)
    assert tools.load_configs("later", str(tmp_path))[1].model_name == "later" == unsaved.train_cfg.model_name
    with pytest.raises(ValueError, match="needs save=True"):
        train(mcfg, replace(tcfg, checkpoint_interval=1), save=False, progress=False)


@pytest.mark.slow
@needs_sample
def test_resume_from_a_checkpoint_gives_the_same_run(data_cache_dir, tmp_path):
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=2, dropout_rate=0.1, max_iters=20, eval_interval=5,
                              checkpoint_interval=10, model_name="straight")
    straight = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    ckpt = os.path.join(straight.path, "checkpoints", "step_000010.pt")
    assert load_checkpoint(ckpt)["step"] == 10
    # continue a copy of the run from step 10: the weights and the log match the straight run's
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    os.makedirs(resumed_dir / "checkpoints")
    os.link(ckpt, resumed_dir / "checkpoints" / "step_000010.pt")
    resumed = train(resume=str(resumed_dir / "checkpoints" / "step_000010.pt"), trained_dir=str(tmp_path / "runs"),
                    progress=False)  # a folder without the run's configs does not own it: a new run, in trained_dir
    assert resumed.path == str(tmp_path / "runs" / "straight_from_10") and len(resumed.log) == len(straight.log) == 4
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.log[-1]["val_ntp_loss"] == straight.log[-1]["val_ntp_loss"]
    assert sorted(os.listdir(resumed.path)) == sorted(tools.SAVED_FILES) and os.listdir(resumed_dir) == ["checkpoints"]
    with pytest.raises(ValueError, match="differs from the checkpoint"):
        train(mcfg, replace(tcfg, lr_max=1e-3), resume=ckpt, progress=False)


def test_precision_is_chosen_by_the_device_and_its_bf16_units(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda: "AMX-BF16")
    assert tools.pick_precision("auto", "cpu") == ("bf16", "the CPU has AMX-BF16 units")
    assert tools.pick_precision(None, "cpu")[0] == "fp32"  # the older rule: bf16 on CUDA only
    assert tools.pick_precision("fp32", "cpu")[0] == "fp32" and tools.pick_precision("bf16", "cpu")[0] == "bf16"
    assert tools.pick_precision("auto", "mps")[0] == "fp32"
    with pytest.raises(ValueError, match="not allowed on MPS"):
        tools.pick_precision("bf16", "mps")
    monkeypatch.setattr(hardware, "cpu_bf16_units", lambda: None)
    assert tools.pick_precision("auto", "cpu") == ("fp32", "the CPU has no bf16 units")
    assert "emulated" in tools.pick_precision("bf16", "cpu")[1]
    with pytest.raises(ValueError, match="precision='fp16' is not allowed"):
        TrainConfig(precision="fp16")


@pytest.mark.slow
@needs_sample
def test_a_bf16_run_records_its_precision_keeps_fp32_weights_and_resumes_in_it(data_cache_dir, tmp_path, capsys):
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=2, dropout_rate=0.1, max_iters=10, eval_interval=5,
                              checkpoint_interval=5, model_name="half", precision="bf16")
    straight = train(mcfg, tcfg, trained_dir=str(tmp_path))
    assert "on cpu in bf16" in capsys.readouterr().out
    assert straight.train_cfg.precision == tools.load_configs("half", str(tmp_path))[1].precision == "bf16"
    assert all(v.dtype == torch.float32 for v in torch.load(os.path.join(straight.path, "model.pth")).values())
    assert math.isfinite(straight.log[-1]["val_bpb"])
    fp32 = train(mcfg, replace(tcfg, precision="fp32", checkpoint_interval=None), save=False, progress=False)
    assert fp32.log[-1]["val_ntp_loss"] != straight.log[-1]["val_ntp_loss"]  # bf16 really was used
    ckpt = os.path.join(straight.path, "checkpoints", "step_000005.pt")
    assert load_checkpoint(ckpt)["train_config"]["precision"] == "bf16"
    copy = tmp_path / "copy"
    os.makedirs(copy / "checkpoints")
    os.link(ckpt, copy / "checkpoints" / "step_000005.pt")
    resumed = train(resume=str(copy / "checkpoints" / "step_000005.pt"), trained_dir=str(tmp_path / "runs"))
    assert "resuming at step 5 of 10 on cpu in bf16" in capsys.readouterr().out
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
@needs_sample
def test_cli_trains_and_saves(tmp_path, data_cache_dir):
    out = run_cli("--data_path=../shared/data/tinystories_sample.txt", f"--data_cache_dir={data_cache_dir}",
                  f"--trained_dir={tmp_path}", "--model_name=cli", "--dim=16", "--num_layers=2", "--fs_periods=1",
                  "--max_seq_len=32", "--max_iters=4", "--eval_interval=2", "--batch_size=4", "--eval_samples=1")
    assert out.returncode == 0, out.stderr
    assert "saved to" in out.stdout and "bits per byte" in out.stdout
    assert "ntp=" in out.stderr and "loss=" not in out.stderr  # the bar shows the next-token loss, not the total
    assert tools.list_runs(str(tmp_path)) == ["cli"]
    _, tcfg = tools.load_configs("cli", str(tmp_path))
    assert tcfg.max_iters == 4 and tcfg.data_path == "../shared/data/tinystories_sample.txt"
    # the start says what the data is and how many passes the run makes over it; the config records both
    assert f"{tcfg.train_tokens:,} tokens (tinystories_sample.txt)" in out.stdout
    assert tcfg.passes == round(4 * 4 * 32 / tcfg.train_tokens, 4) and "passes over the training split" in out.stdout
    assert tcfg.machine == tools.machine_name("cpu") and tcfg.machine.startswith("cpu: ")  # what trained it
    out = run_cli("--data_path=../shared/data/tinystories_sample.txt", f"--trained_dir={tmp_path}",
                  "--model_name=cli", "--max_iters=2")
    assert out.returncode == 2 and "already exists" in out.stderr


# ---------------------------------------------------------------- a moving average of the weights


def test_the_weight_average_is_the_normalized_exponential_average_of_the_steps_weights():
    """After n steps: sum_k d**(n-k) w_k / sum_k d**(n-k) over the weights after each step (the initial ones
    left out); the schedule's buffer is copied; the model it averages is untouched."""
    from optimizer import WeightAverage

    torch.manual_seed(0)
    model = Model(ModelConfig(**{**TINY_MODEL, "fs_periods": 2, "fs_lambda_schedule": "decay"}))
    d, seen = 0.6, []
    ema = WeightAverage(model, d)
    for n in range(1, 5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.loss_fn.set_progress(0.2 * n)
        seen.append([p.detach().clone() for p in model.parameters()])
        ema.update(model)
        norm = sum(d ** (n - k) for k in range(1, n + 1))
        for i, got in enumerate(ema.model.parameters()):
            want = sum(d ** (n - k) * seen[k - 1][i] for k in range(1, n + 1)) / norm
            torch.testing.assert_close(got, want)
        assert all(torch.equal(a, b) for a, b in zip(seen[-1], model.parameters()))
        assert torch.equal(ema.model.loss_fn.fs_weight, model.loss_fn.fs_weight)
        assert ema.updates == n and not any(p.requires_grad for p in ema.model.parameters())


@pytest.mark.slow
@needs_sample
def test_an_averaged_run_trains_the_same_and_logs_saves_and_resumes_its_average(data_cache_dir, tmp_path):
    """ema_decay changes what is evaluated and saved, not the training: the same gradient norms as without it,
    other validation losses; model.pth holds the average, which recomputes the last row; a resumed run ends on
    the same average as the straight one."""
    from scoring import evaluate_split

    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=1, dropout_rate=0.1, max_iters=20, eval_interval=5,
                              checkpoint_interval=10, model_name="plain")
    plain = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    averaged = train(mcfg, replace(tcfg, ema_decay=0.9, model_name="averaged"), trained_dir=str(tmp_path),
                     progress=False)
    assert [r["grad_norm"] for r in averaged.log] == [r["grad_norm"] for r in plain.log]
    assert all(a["val_ntp_loss"] != b["val_ntp_loss"] for a, b in zip(averaged.log, plain.log))
    assert not any(torch.equal(a, b) for a, b in zip(averaged.model.parameters(), plain.model.parameters()))
    model, _, _ = tools.load_model("averaged", str(tmp_path))
    for a, b in zip(model.state_dict().values(), averaged.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    parts = evaluate_split(model, tools.get_data(mcfg, tcfg), "val", mcfg, batch_size=5, device="cpu")
    assert parts["ntp_loss"] == pytest.approx(averaged.log[-1]["val_ntp_loss"], rel=1e-4)
    ckpt = os.path.join(averaged.path, "checkpoints", "step_000010.pt")
    assert load_checkpoint(ckpt)["ema"]["updates"] == 10
    resumed_dir = tmp_path / "resumed"
    os.makedirs(resumed_dir / "checkpoints")
    os.link(ckpt, resumed_dir / "checkpoints" / "step_000010.pt")
    resumed = train(resume=str(resumed_dir / "checkpoints" / "step_000010.pt"), trained_dir=str(tmp_path / "runs"),
                    progress=False)  # a copy of the checkpoint alone: a new run under trained_dir
    assert resumed.path == str(tmp_path / "runs" / "averaged_from_10")
    for a, b in zip(resumed.model.state_dict().values(), averaged.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert resumed.log[-1]["val_ntp_loss"] == averaged.log[-1]["val_ntp_loss"]


@pytest.mark.slow
@needs_sample
def test_an_averaged_run_can_keep_its_last_weights_as_the_plain_run_of_the_same_command(data_cache_dir, tmp_path):
    """ema_save_last writes the last weights as the twin NAME_last: the run the command without ema_decay gives
    (same log but for the timing columns, the same model.pth, bitwise on CPU), while NAME keeps the average;
    it survives a resume, folds seed groups into G_last, and a taken twin name is refused before training."""
    from runs import last_weights_config

    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=1, dropout_rate=0.1, max_iters=20, eval_interval=5,
                              checkpoint_interval=10, model_name="plain")
    plain = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    both = train(mcfg, replace(tcfg, ema_decay=0.9, ema_save_last=True, model_name="avg"),
                 trained_dir=str(tmp_path), progress=False)
    assert both.last.path == str(tmp_path / "avg_last") and both.path == str(tmp_path / "avg")
    timing = {"elapsed_s", "tokens_per_s"}
    saved_log = pd.read_csv(tmp_path / "avg_last" / "log_data.csv").to_dict("records")
    for ours, theirs, saved in zip(both.last.log, plain.log, saved_log, strict=True):
        assert {k: ours[k] for k in ours.keys() - timing} == {k: theirs[k] for k in theirs.keys() - timing}
        assert saved["val_ntp_loss"] == pytest.approx(ours["val_ntp_loss"], rel=1e-6)
    assert both.log[-1]["val_ntp_loss"] != plain.log[-1]["val_ntp_loss"]  # the run itself is the average
    for name, want in (("avg_last", plain.model), ("avg", both.model)):
        model, _, _ = tools.load_model(name, str(tmp_path))
        for a, b in zip(model.state_dict().values(), want.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    _, twin_cfg = tools.load_configs("avg_last", str(tmp_path))
    assert replace(twin_cfg, model_name="plain", started=None) == replace(plain.train_cfg, started=None)  # renamed
    assert twin_cfg.ema_decay is None and not twin_cfg.ema_save_last

    ckpt = os.path.join(both.path, "checkpoints", "step_000010.pt")  # resumed: both folders end the same
    resumed_dir = tmp_path / "again" / "avg"
    os.makedirs(resumed_dir / "checkpoints")
    os.link(ckpt, resumed_dir / "checkpoints" / "step_000010.pt")
    for fname in ("model_config.json", "train_config.json"):  # a copy of the run folder, which owns the checkpoint
        shutil.copy(os.path.join(both.path, fname), resumed_dir / fname)
    resumed = train(resume=str(resumed_dir / "checkpoints" / "step_000010.pt"), progress=False)
    assert resumed.last.path == str(tmp_path / "again" / "avg_last")
    assert [r["val_ntp_loss"] for r in resumed.last.log] == [r["val_ntp_loss"] for r in plain.log]
    model, _, _ = tools.load_model("avg_last", str(tmp_path / "again"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.model.state_dict().values()))

    seeded = replace(tcfg, ema_decay=0.9, ema_save_last=True, model_name="g_s3", group="g", seed=3)
    assert (last_weights_config(seeded).model_name, last_weights_config(seeded).group) == ("g_last_s3", "g_last")
    short = replace(tcfg, ema_decay=0.9, ema_save_last=True, max_iters=2, checkpoint_interval=None)
    os.makedirs(tmp_path / "new_last")
    with pytest.raises(FileExistsError, match="new_last"):  # the twin's name is taken: no folder is left behind
        train(mcfg, replace(short, model_name="new"), trained_dir=str(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "new")
    os.makedirs(tmp_path / "s_last_s1")
    with pytest.raises(FileExistsError, match="s_last_s1"):
        train_seeds(mcfg, replace(short, model_name="s"), [0, 1], trained_dir=str(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "s_s0")
    unsaved = train(mcfg, replace(short, model_name=None), save=False, progress=False)  # save_run writes the twin
    assert unsaved.last.path is None and unsaved.last.train_cfg.model_name is None
    save_run(unsaved, str(tmp_path), model_name="later")
    assert unsaved.last.path == str(tmp_path / "later_last") and unsaved.last.train_cfg.model_name == "later_last"
    assert sorted(os.listdir(unsaved.last.path)) == sorted(tools.SAVED_FILES)


# ---------------------------------------------------------------- seeds and equal compute


@pytest.mark.slow
@needs_sample
def test_seeds_train_one_run_each_as_a_group(tmp_path, data_cache_dir):
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, model_name="tb", max_iters=4, eval_interval=2)
    runs = train_seeds(mcfg, tcfg, [0, 1], trained_dir=str(tmp_path), progress=False)
    assert [os.path.basename(r.path) for r in runs] == ["tb_s0", "tb_s1"]
    for seed in (0, 1):
        _, saved = tools.load_configs(f"tb_s{seed}", str(tmp_path))
        assert saved.group == "tb" and saved.seed == seed and saved.model_name == f"tb_s{seed}"
    assert runs[0].log[-1]["val_ntp_loss"] != runs[1].log[-1]["val_ntp_loss"]
    with pytest.raises(FileExistsError, match="tb_s1"):  # refused before anything trains: no tb_s2 appears
        train_seeds(mcfg, tcfg, [1, 2], trained_dir=str(tmp_path), progress=False)
    assert tools.list_runs(str(tmp_path)) == ["tb_s0", "tb_s1"]
    with pytest.raises(ValueError, match="distinct seeds"):
        train_seeds(mcfg, tcfg, [3, 3], trained_dir=str(tmp_path), progress=False)
    out = run_cli("--data_path=../shared/data/tinystories_sample.txt", f"--trained_dir={tmp_path}",
                  "--model_name=cli", "--seeds=0,1", "--seed=2", "--max_iters=2")
    assert out.returncode == 2 and "drop --seed" in out.stderr
    out = run_cli("--data_path=../shared/data/tinystories_sample.txt", f"--trained_dir={tmp_path}",
                  "--model_name=cli", "--seeds=0,x", "--max_iters=2")
    assert out.returncode == 2 and "--seeds=0,1,2" in out.stderr


@pytest.mark.slow
@needs_sample
def test_match_flops_gives_a_baseline_the_futureformers_compute(tmp_path, tiny_runs, data_cache_dir, monkeypatch):
    root = tiny_runs["trained_dir"]
    ff = tiny_runs["tiny_ff"]
    target = run_flops("tiny_ff", root)
    assert target == ff.log[-1]["flops"] == round(40 * 8 * 64 * flops_per_token(ff.model_cfg))  # exact in the log
    assert [row["flops"] for row in ff.log] == [round(row["tokens"] * flops_per_token(ff.model_cfg)) for row in ff.log]
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, model_name="matched")
    matched = match_flops(mcfg, tcfg, "tiny_ff", root)
    per_step = flops_per_token(mcfg) * tcfg.batch_size * mcfg.max_seq_len
    assert matched.max_iters > tcfg.max_iters  # the baseline is cheaper per step, so it gets more steps
    assert matched.warmup_iters == int(0.05 * matched.max_iters)  # the schedule follows the new length
    run = train(mcfg, matched, trained_dir=str(tmp_path), progress=False)
    assert abs(run_flops("matched", str(tmp_path)) - target) <= per_step / 2
    assert abs(run.log[-1]["flops"] - target) <= per_step / 2
    # a step's tokens are the global batch: accumulation and processes (torchrun's WORLD_SIZE) take their share
    assert match_flops(mcfg, replace(tcfg, grad_accum_steps=2), "tiny_ff", root).max_iters == \
        round(target / (2 * per_step))
    assert match_flops(mcfg, replace(tcfg, grad_accum_steps=2), "tiny_ff", root, processes=2).max_iters == \
        round(target / (4 * per_step))
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert match_flops(mcfg, tcfg, "tiny_ff", root).max_iters == round(target / (2 * per_step))
    monkeypatch.delenv("WORLD_SIZE")
    out = run_cli("--data_path=../shared/data/tinystories_sample.txt", f"--trained_dir={root}",
                  "--model_name=x", "--match_flops=tiny_ff", "--max_iters=3")
    assert out.returncode == 2 and "drop --max_iters" in out.stderr
    out = run_cli("--data_path=../shared/data/tinystories_sample.txt", f"--trained_dir={root}",
                  "--model_name=x", "--match_flops=no_such_run")
    assert out.returncode == 2 and "no trained model 'no_such_run'" in out.stderr


@pytest.mark.slow
@needs_sample
def test_a_scheduled_future_sight_weight_follows_the_run_and_the_log_keeps_the_parts_unweighted(data_cache_dir):
    """decay to 0 at half the run: the row after step 2 of 4 was evaluated at the weight of step 2's fraction
    (1/4: half of lambda**k), the last row at 0, where the total loss is the next-token loss alone."""
    lam = 0.5
    mcfg, tcfg = tiny_configs(data_cache_dir, max_iters=4, eval_interval=2, fs_lambda_schedule="decay",
                              fs_lambda_end=0.5, fs_loss_lambda=lam)
    first, last = train(mcfg, tcfg, save=False, progress=False).log
    for split in ("train", "val"):
        fs = sum(0.5 * lam ** k * first[f"{split}_fs_loss_{k}"] for k in (1, 2))
        assert first[f"{split}_loss"] == pytest.approx(first[f"{split}_ntp_loss"] + fs, rel=1e-5)
        assert last[f"{split}_loss"] == pytest.approx(last[f"{split}_ntp_loss"], rel=1e-6)
        assert last[f"{split}_fs_loss_1"] > 0  # the parts are still measured, unweighted


# ---------------------------------------------------------------- torch.compile


def test_compile_is_automatic_for_long_runs_on_cpu_and_cuda():
    from trainer import AUTO_COMPILE_STEPS, will_compile

    long, short = TrainConfig(max_iters=AUTO_COMPILE_STEPS), TrainConfig(max_iters=AUTO_COMPILE_STEPS - 1)
    assert will_compile(long, "cpu") and will_compile(long, "cuda") and not will_compile(long, "mps")
    assert not will_compile(short, "cpu")
    assert will_compile(replace(short, compile=True), "cpu") and not will_compile(replace(long, compile=False), "cpu")


@pytest.mark.slow
@needs_sample
def test_a_failing_compile_falls_back_to_eager_with_the_same_numbers(tmp_path, data_cache_dir, monkeypatch):
    mcfg, tcfg = tiny_configs(data_cache_dir, max_iters=6, eval_interval=3, dropout_rate=0.1)
    eager = train(mcfg, replace(tcfg, compile=False), save=False, progress=False)

    def broken_compile(model, **kwargs):
        def fails(*args, **kw):
            raise RuntimeError("no C++ compiler (simulated)")
        return fails

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match="torch.compile failed .*no C\\+\\+ compiler"):
        fallen = train(mcfg, replace(tcfg, compile=True), save=False, progress=False)
    for a, b in zip(fallen.log, eager.log, strict=True):
        assert {k: v for k, v in a.items() if k not in ("elapsed_s", "tokens_per_s")} == {
            k: v for k, v in b.items() if k not in ("elapsed_s", "tokens_per_s")}


@pytest.fixture
def no_fx_graph_cache():
    """Inductor's graph cache off, through its own config.patch (a monkeypatched config entry is left hidden after
    the test, and a later compile in the same session then fails to read it)."""
    import torch._inductor.config as inductor_config

    with inductor_config.patch(fx_graph_cache=False):
        yield


@pytest.mark.slow
@needs_sample
def test_compiled_training_matches_eager(data_cache_dir, capsys, monkeypatch, no_fx_graph_cache):
    """A real compile (tens of seconds): with dropout off, compiled and eager training give the same losses to
    float tolerance, a scheduled future-sight weight included (the compiled step reads the loss's weight buffer,
    which set_progress changes every step, not a value baked in when it compiled); the start-up lines say it
    compiled and how long the first step took, and inductor's FutureWarnings do not break into them. The graph cache
    is off (no_fx_graph_cache): the graphs are really lowered, where inductor warns."""
    import warnings

    mcfg, tcfg = tiny_configs(data_cache_dir, max_iters=3, eval_interval=3, dropout_rate=0.0, num_layers=3,
                              fs_periods=1, dim=16, fs_lambda_schedule="decay", fs_loss_lambda=1.0)
    eager = train(mcfg, replace(tcfg, compile=False), save=False, progress=False)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    import modules.mqa as mqa

    monkeypatch.setattr(mqa, "_TABLES", {})  # a first compile that meets no rotary table yet must not break its graph
    counters.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = train(mcfg, replace(tcfg, compile=True), save=False, progress=True)
    future = [str(w.message)[:300] for w in caught if issubclass(w.category, FutureWarning)]
    assert not future, future
    assert not counters["graph_break"], dict(counters["graph_break"])  # a break would split the graph and its RNG
    err = capsys.readouterr().err
    assert "compiling the training step with torch.compile" in err and "compiled: the first step took" in err
    for key in ("train_ntp_loss", "val_ntp_loss", "grad_norm"):
        assert compiled.log[-1][key] == pytest.approx(eager.log[-1][key], rel=1e-4), key
    model = compiled.model
    step = torch.compile(model)
    x, y = tools.get_batch(tools.get_data(mcfg, tcfg), "train", 2, mcfg.max_seq_len, mcfg.lookahead,
                           torch.Generator().manual_seed(0))
    with torch.no_grad(), hardware.quiet_compile():  # the first call compiles: inductor's warnings, as train() does
        for fraction in (0.0, 0.5, 0.9):
            model.loss_fn.set_progress(fraction)
            assert step(x, y)[1].item() == pytest.approx(model(x, y)[1].item(), rel=1e-5), fraction


# ---------------------------------------------------------------- gradient accumulation


@pytest.mark.slow
@needs_sample
def test_gradient_accumulation_equals_one_big_batch(data_cache_dir):
    """Two micro-batches of 4 and one batch of 8 read the same sequences and reach the same losses and weights
    (a baseline, dropout off: the future-sight losses are masked means per micro-batch, so a FutureFormer's
    auxiliary terms weigh its micro-batches equally instead)."""
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, max_iters=6, eval_interval=3, dropout_rate=0.0)
    big = train(mcfg, replace(tcfg, batch_size=8), save=False, progress=False)
    accumulated = train(mcfg, replace(tcfg, batch_size=4, grad_accum_steps=2), save=False, progress=False)
    for a, b in zip(accumulated.log, big.log, strict=True):  # (the sampled evaluations use batch_size batches)
        assert a["global_batch"] == b["global_batch"] == 8 and a["tokens"] == b["tokens"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
    assert accumulated.log[-1]["val_ntp_loss"] == pytest.approx(big.log[-1]["val_ntp_loss"], rel=1e-5)  # whole split
    for p, q in zip(accumulated.model.parameters(), big.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)  # Adam turns float noise in ~0 gradients into ~lr


# ---------------------------------------------------------------- several processes (torchrun, DDP)


def _torchrun(nproc, *args, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           os.path.join(tools.REPO_DIR, "train.py"), *args], cwd=tools.REPO_DIR, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@needs_sample
def test_two_processes_equal_one_with_two_micro_batches(tmp_path, data_cache_dir):
    """torchrun with 2 gloo processes of 4 sequences each, and 1 process accumulating 2 micro-batches of 4, read the
    same sequences (one draw, split) and reach the same losses, gradient norms and weights (dropout off)."""
    common = ["--data_path=../shared/data/tinystories_sample.txt", f"--data_cache_dir={data_cache_dir}",
              f"--trained_dir={tmp_path}", "--dim=32", "--num_layers=3", "--num_q_heads=2", "--max_seq_len=64",
              "--fs_periods=1", "--dropout_rate=0", "--max_iters=6", "--eval_interval=3", "--eval_samples=2",
              "--batch_size=4", "--lr_max=1e-2", "--compile=false"]
    r = _torchrun(2, *common, "--model_name=ddp", "--checkpoint_interval=3")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("saved to") == 1  # only the first process reports and writes
    one = run_cli(*common, "--model_name=one", "--grad_accum_steps=2")
    assert one.returncode == 0, one.stderr[-3000:]
    ddp, single = tools.read_log("ddp", str(tmp_path)), tools.read_log("one", str(tmp_path))
    assert list(ddp["global_batch"]) == list(single["global_batch"]) == [8, 8]
    assert tools.load_configs("ddp", str(tmp_path))[1].processes == 2  # the config says how the batch was made
    assert tools.load_configs("one", str(tmp_path))[1].processes == 1
    for col in ("grad_norm", "val_ntp_loss", "train_ntp_loss"):
        assert ddp[col].tolist() == pytest.approx(single[col].tolist(), rel=1e-4), col
    a, _, _ = tools.load_model("ddp", str(tmp_path))
    b, _, _ = tools.load_model("one", str(tmp_path))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4)  # Adam turns float noise in ~0 gradients into ~lr
    # the checkpoint of a 2-process run resumes under 2 processes, to the same weights
    os.rename(tmp_path / "ddp" / "model.pth", tmp_path / "ddp_model.pth")
    r = _torchrun(2, f"--resume={tmp_path / 'ddp' / 'checkpoints' / 'step_000003.pt'}")
    assert r.returncode == 0, r.stderr[-3000:]
    resumed, _, _ = tools.load_model("ddp_from_3", str(tmp_path))
    for p, q in zip(resumed.parameters(), a.parameters()):
        assert torch.equal(p, q)
    r = run_cli(f"--resume={tmp_path / 'ddp' / 'checkpoints' / 'step_000003.pt'}")
    assert r.returncode == 2 and "written by 2 process(es)" in r.stderr
