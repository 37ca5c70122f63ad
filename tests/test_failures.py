"""When something goes wrong: bad input, broken files, interruptions and NaNs. One test per kind of failure;
each checks that nothing is lost and that the message names what is wrong, in one line, without a traceback."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from conftest import needs_sample, tiny_configs

import plots
import runs as runs_module
import tools
import trainer
from config import ModelConfig, TrainConfig, parse_overrides, replace
from modules.model import Model
from optimizer import WeightAverage
from runs import load_checkpoint, write_checkpoint
from trainer import NonFiniteError, train

TIMING = {"elapsed_s", "tokens_per_s"}


def run_script(script, *args):
    return subprocess.run([sys.executable, script, *args], cwd=tools.REPO_DIR, capture_output=True, text=True,
                          timeout=300)


def one_clear_line(r, *words):
    """A command failed with exit code 2 and one line on stderr that holds `words`, and no traceback."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in last, (word, last)
    return last


@pytest.fixture
def run_copy(tiny_runs, tmp_path):
    """A copy of the shared tiny FutureFormer's folder in a fresh trained/: (trained_dir, name)."""
    root = tmp_path / "trained"
    shutil.copytree(os.path.join(tiny_runs["trained_dir"], "tiny_ff"), root / "ff",
                    ignore=shutil.ignore_patterns("scores"))
    return str(root), "ff"


# ---------------------------------------------------------------- numbers that are not numbers


def test_non_finite_config_values_are_errors():
    for field, cls in (("lr_max", TrainConfig), ("grad_clip", TrainConfig), ("theta", ModelConfig),
                       ("fs_loss_lambda", ModelConfig), ("dropout_rate", ModelConfig)):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"{field}=.* must be a finite number"):
                cls(**{field: value})
    (_, t), _ = parse_overrides(["--lr_max=nan"], ModelConfig, TrainConfig)
    with pytest.raises(ValueError, match="lr_max=nan is not allowed: must be a finite number"):
        TrainConfig(**t)


@pytest.mark.slow
@needs_sample
def test_a_non_finite_loss_stops_training_at_its_step(tmp_path, data_cache_dir, monkeypatch):
    """The loss turns NaN at step 7: training stops there, before the optimizer step, names the step and the
    last good checkpoint; no model.pth is written and the checkpoint's weights are finite."""
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="nan", max_iters=12, eval_interval=4, checkpoint_interval=5)
    forward, calls = Model.forward, {"n": 0}

    def poisoned(self, x, y=None, cache=None):
        logits, loss = forward(self, x, y, cache)
        if self.training and loss is not None:
            calls["n"] += 1
            if calls["n"] == 7:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(Model, "forward", poisoned)
    with pytest.raises(NonFiniteError) as err:
        train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    message = str(err.value)
    ckpt = os.path.join(str(tmp_path), "nan", "checkpoints", "step_000005.pt")
    assert err.value.step == 7 and "step 7:" in message and ckpt in message and "--resume=" in message
    assert not os.path.exists(os.path.join(str(tmp_path), "nan", "model.pth"))
    assert all(torch.isfinite(v).all() for v in load_checkpoint(ckpt)["model"].values())
    assert list(tools.read_log("nan", str(tmp_path))["step"]) == [4]  # the log so far stays


def test_weights_with_nan_are_never_saved(tmp_path):
    model = Model(ModelConfig(dim=16, num_layers=2, num_q_heads=2, fs_periods=1, max_seq_len=16))
    with torch.no_grad():
        model.embedding.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="not saving .*embedding.weight"):
        tools.save_model(str(tmp_path / "run"), model, model.cfg, TrainConfig())
    assert not os.path.exists(tmp_path / "run" / "model.pth")


def test_a_checkpoint_with_a_nan_in_its_averaged_weights_is_never_written(tmp_path):
    """The checkpoint of an --ema_decay run holds two sets of weights: a NaN in either refuses the file."""
    model = Model(ModelConfig(dim=16, num_layers=2, num_q_heads=2, fs_periods=1, max_seq_len=16))
    ema = WeightAverage(model, 0.9)
    with torch.no_grad():
        ema.model.embedding.weight[0, 0] = float("nan")
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(FloatingPointError, match="averaged weights.*embedding.weight"):
        write_checkpoint(str(tmp_path), 3, model, opt, torch.Generator(), {"ema": ema.state_dict()},
                         model.cfg, TrainConfig(ema_decay=0.9))
    assert not os.path.exists(tmp_path / "checkpoints" / "step_000003.pt")


# ---------------------------------------------------------------- interruptions


@pytest.mark.slow
@needs_sample
@pytest.mark.usefixtures("default_stop_signals")
def test_ctrl_c_checkpoints_and_resuming_gives_the_uninterrupted_log(tmp_path, data_cache_dir, monkeypatch, capsys):
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="whole", max_iters=12, eval_interval=4, dropout_rate=0.1)
    whole = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    lr_at = trainer.lr_at

    def ctrl_c_in_step_6(step, cfg):  # Ctrl-C arrives as step 6 (index 5) begins
        if step == 5:
            signal.raise_signal(signal.SIGINT)
        return lr_at(step, cfg)

    monkeypatch.setattr(trainer, "lr_at", ctrl_c_in_step_6)
    cut = train(mcfg, replace(tcfg, model_name="cut"), trained_dir=str(tmp_path), progress=False)
    monkeypatch.setattr(trainer, "lr_at", lr_at)
    ckpt = os.path.join(str(tmp_path), "cut", "checkpoints", "step_000006.pt")
    assert cut.stopped_at == 6 and cut.resume_from == ckpt and os.path.isfile(ckpt)
    err = capsys.readouterr().err
    assert f"python train.py --resume={ckpt}" in err and "interrupted after step 6 of 12" in err
    assert list(tools.read_log("cut", str(tmp_path))["step"]) == [4]  # the log so far
    assert not os.path.exists(os.path.join(str(tmp_path), "cut", "model.pth"))
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is itself again
    resumed = train(resume=ckpt, progress=False)
    assert resumed.path == os.path.join(str(tmp_path), "cut") and resumed.stopped_at is None
    for a, b in zip(resumed.log, whole.log, strict=True):  # every column, the gradient norms included
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    for a, b in zip(resumed.model.state_dict().values(), whole.model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.slow
@needs_sample
def test_a_run_failing_before_its_first_step_leaves_no_folder(tmp_path, data_cache_dir, monkeypatch):
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="broken", max_iters=4)

    def fails(self, *args, **kwargs):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(Model, "forward", fails)
    with pytest.raises(RuntimeError, match="simulated"):
        train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    assert not os.path.exists(tmp_path / "broken")
    monkeypatch.undo()
    assert train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False).path == str(tmp_path / "broken")


def test_an_interrupted_write_leaves_the_old_file_and_no_tmp(tmp_path, monkeypatch):
    model = Model(ModelConfig(dim=16, num_layers=2, num_q_heads=2, fs_periods=1, max_seq_len=16))
    tools.save_model(str(tmp_path), model, model.cfg, TrainConfig())
    before = (tmp_path / "model.pth").read_bytes()

    def dies_half_way(fd):  # the file is written, not yet on the disk: Ctrl-C
        os.ftruncate(fd, 11)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        tools.save_model(str(tmp_path), model, model.cfg, TrainConfig())
    assert (tmp_path / "model.pth").read_bytes() == before
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]


# ---------------------------------------------------------------- nothing is overwritten


@pytest.mark.slow
@needs_sample
def test_resuming_a_finished_run_continues_in_a_new_folder(tmp_path, data_cache_dir, capsys):
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="done", max_iters=8, eval_interval=2, checkpoint_interval=4)
    train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    folder = tmp_path / "done"
    before = {f: (folder / f).read_bytes() for f in ("log_data.csv", "model.pth", "train_config.json")}
    resumed = train(resume=str(folder / "checkpoints" / "step_000004.pt"), progress=False)
    assert resumed.path == str(tmp_path / "done_from_4") and "continues in" in capsys.readouterr().err
    assert {f: (folder / f).read_bytes() for f in before} == before  # the finished run is untouched
    assert tools.load_configs("done_from_4", str(tmp_path))[1].model_name == "done_from_4"
    assert list(tools.read_log("done_from_4", str(tmp_path))["step"]) == [2, 4, 6, 8]
    # a crash after the checkpoint (no model.pth, the log past it): the same, nothing of the old log is cut
    os.remove(folder / "model.pth")
    again = train(resume=str(folder / "checkpoints" / "step_000004.pt"), progress=False)
    assert again.path == str(tmp_path / "done_from_4_2")
    assert (folder / "log_data.csv").read_bytes() == before["log_data.csv"]


@pytest.mark.slow
@needs_sample
def test_a_resumed_run_is_only_ever_written_under_the_runs_folder(tmp_path, data_cache_dir, monkeypatch, capsys):
    """A checkpoint that no run folder owns (in the repository root, in a temporary folder, in another run's
    checkpoints/) resumes into a new run under trained_dir (--trained_dir, else trained/), never beside the file."""
    runs = tmp_path / "runs"
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="src", max_iters=6, eval_interval=2, checkpoint_interval=2)
    train(mcfg, tcfg, trained_dir=str(runs), progress=False)
    ckpt = runs / "src" / "checkpoints" / "step_000002.pt"
    monkeypatch.setattr(runs_module, "TRAINED_DIR", str(tmp_path / "default_runs"))  # what trained/ would be
    in_repo = os.path.join(tools.REPO_DIR, f"stray_checkpoint_{os.getpid()}.pt")
    parent_before = sorted(os.listdir(os.path.dirname(tools.REPO_DIR)))
    shutil.copy(ckpt, in_repo)
    try:
        repo_before = sorted(os.listdir(tools.REPO_DIR))
        resumed = train(resume=in_repo, progress=False)
        assert resumed.path == str(tmp_path / "default_runs" / "src_from_2")
        assert "does not lie in the checkpoints/ of the run folder" in capsys.readouterr().err
        assert sorted(os.listdir(tools.REPO_DIR)) == repo_before  # nothing beside the file
        assert sorted(os.listdir(os.path.dirname(tools.REPO_DIR))) == parent_before  # nor in the repository's parent
        r = run_script("train.py", f"--resume={in_repo}", f"--trained_dir={tmp_path / 'given'}")
        assert r.returncode == 0, r.stderr[-2000:]
        assert os.listdir(tmp_path / "given") == ["src_from_2"]  # --trained_dir is where it goes
    finally:
        os.remove(in_repo)
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(ckpt, loose / "step_000002.pt")
    assert train(resume=str(loose / "step_000002.pt"), trained_dir=str(runs), progress=False).path == \
        str(runs / "src_from_2")
    assert sorted(os.listdir(loose)) == ["step_000002.pt"]
    # a checkpoint of another run put into this run's checkpoints/: this run's log and configs stay as they are
    other_cfg = tiny_configs(data_cache_dir, model_name="other", max_iters=4, eval_interval=2)
    train(*other_cfg, trained_dir=str(runs), progress=False)
    os.makedirs(runs / "other" / "checkpoints")
    shutil.copy(ckpt, runs / "other" / "checkpoints" / "step_000002.pt")
    before = {f: (runs / "other" / f).read_bytes() for f in ("log_data.csv", "train_config.json", "model.pth")}
    moved = train(resume=str(runs / "other" / "checkpoints" / "step_000002.pt"), progress=False)
    assert moved.path == str(tmp_path / "default_runs" / "src_from_2_2")
    assert "not a checkpoint of the run whose folder it lies in" in capsys.readouterr().err
    assert {f: (runs / "other" / f).read_bytes() for f in before} == before


@pytest.mark.slow
def test_plots_never_overwrite_what_they_did_not_write(run_copy, tmp_path):
    root, name = run_copy
    weights = os.path.join(root, name, "model.pth")
    before = open(weights, "rb").read()
    r = run_script("model_comparison.py", name, f"--trained_dir={root}", f"--out={weights}", "--num_sequences=0")
    one_clear_line(r, "inside the run folder", "plots never go into a run's folder")
    r = run_script("model_comparison.py", name, f"--trained_dir={root}", "--num_sequences=0",
                   f"--out={os.path.join(root, name, 'curves.png')}")
    one_clear_line(r, "inside the run folder")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    r = run_script("model_comparison.py", name, f"--trained_dir={root}", f"--out={notes}", "--num_sequences=0")
    one_clear_line(r, "exists and is not a plot model_comparison.py wrote")
    assert open(weights, "rb").read() == before and notes.read_text() == "my notes"
    assert not os.path.exists(os.path.join(root, name, "curves.png"))
    png = tmp_path / "curves.png"  # its own plot it may replace
    for _ in range(2):
        r = run_script("model_comparison.py", name, f"--trained_dir={root}", f"--out={png}", "--num_sequences=0")
        assert r.returncode == 0, r.stderr
    assert plots.PLOT_MARK.encode() in png.read_bytes()[:4096]


# ---------------------------------------------------------------- broken or mismatched files


@pytest.mark.slow
def test_truncated_or_foreign_model_file(run_copy):
    root, name = run_copy
    weights = os.path.join(root, name, "model.pth")
    data = open(weights, "rb").read()
    for broken in (data[:len(data) // 2], b"not a model at all"):
        open(weights, "wb").write(broken)
        with pytest.raises(ValueError, match="model.pth is not a readable model file"):
            tools.load_model(name, root)
        r = run_script("inference.py", name, f"--trained_dir={root}", "--max_len=2")
        one_clear_line(r, "model.pth", "truncated")
    open(weights, "wb").write(data)
    other = Model(replace(tools.load_configs(name, root)[0], dim=48))  # another configuration
    torch.save(other.state_dict(), weights)
    with pytest.raises(ValueError, match=r"weights of another configuration.*sizes differ .*embedding.weight "
                                         r"\(1027, 48\) vs \(1027, 32\)"):
        tools.load_model(name, root)


def test_missing_or_invalid_config_files(run_copy):
    root, name = run_copy
    cfg = os.path.join(root, name, "model_config.json")
    good = open(cfg).read()
    cases = [("{ not json", "is not valid JSON"), ("[1, 2]", "not an object"),
             (json.dumps({**json.loads(good), "dimm": 3}), "unknown ModelConfig fields \\['dimm'\\]"),
             (json.dumps({**json.loads(good), "dim": "wide"}), "dim='wide' is not allowed"),
             (" " * (runs_module.MAX_CONFIG_BYTES + 1), "more than the")]
    for text, message in cases:
        open(cfg, "w").write(text)
        with pytest.raises(ValueError, match=message):
            tools.load_configs(name, root)
    open(cfg, "w").write(good)
    os.remove(os.path.join(root, name, "train_config.json"))
    with pytest.raises(FileNotFoundError, match="train_config.json is missing"):
        tools.load_configs(name, root)


@pytest.mark.slow
def test_damaged_logs(run_copy):
    root, name = run_copy
    log = os.path.join(root, name, "log_data.csv")
    lines = open(log).read().splitlines()
    head = lines[0].split(",")
    dropped = [",".join(c for i, c in enumerate(row.split(",")) if head[i] != "val_bpb") for row in lines]
    open(log, "w").write("\n".join(dropped) + "\n")
    with pytest.raises(ValueError, match="lacks the column\\(s\\) \\['val_bpb'\\]"):
        tools.read_log(name, root)
    open(log, "w").write("\n".join(lines[:2] + [lines[2].replace(lines[2].split(",")[1], "lots", 1)]) + "\n")
    with pytest.raises(ValueError, match="values that are not numbers in column\\(s\\) \\['tokens'\\]"):
        tools.read_log(name, root)
    r = run_script("model_comparison.py", name, f"--trained_dir={root}", "--num_sequences=0",
                   f"--out={os.path.join(root, 'c.png')}")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "log_data.csv" in r.stderr


@pytest.mark.slow
def test_a_data_file_that_is_not_text(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("Once upon a time, a caf\xe9.".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt is not UTF-8 text \\(byte 0xe9 at offset 23\\)"):
        tools.read_stories(str(latin))
    binary = tmp_path / "weights.bin"
    binary.write_bytes(b"abc\x00\x00def")
    with pytest.raises(ValueError, match="holds NUL bytes"):
        tools.read_stories(str(binary))
    r = run_script("train.py", f"--data_path={latin}", f"--trained_dir={tmp_path}", "--max_iters=2")
    one_clear_line(r, "latin1.txt is not UTF-8 text")
    assert not [d for d in os.listdir(tmp_path) if os.path.isdir(tmp_path / d)]  # no run folder left behind


def test_a_broken_tokenizer_model_file(tmp_path):
    bpe = tools.load_module(os.path.join(tools.TOKENIZERS_DIR, "bpe.py"))
    good = json.loads(open(os.path.join(tools.TOKENIZERS_DIR, "bpe_v2", "models", "128.json")).read())
    cases = [({**good, "merges": "[[1, 2]]"}, "field 'merges' must be"),
             ({**good, "merges": [[1, "2"]]}, "every merge must be a pair of integer ids"),
             ({**good, "alphabet": [1, 2]}, "the alphabet must be a list of characters"),
             ({k: v for k, v in good.items() if k != "vocab_len"}, "field 'vocab_len' must be .*missing"),
             ({**good, "merges": [[0, 999]]}, "uses an undefined id"),
             ({**good, "format": "something else"}, "is not a tokenizer model file")]
    path = tmp_path / "128.json"
    for model, message in cases:
        path.write_text(json.dumps(model))
        with pytest.raises(ValueError, match=message):
            bpe.Tokenizer.load(path)
    path.write_text("{ half a file")
    with pytest.raises(ValueError, match="is not a JSON tokenizer model file"):
        bpe.Tokenizer.load(path)


# ---------------------------------------------------------------- run names


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp/abs", "a/b", "..", ""])
def test_run_names_are_names(name):
    with pytest.raises(ValueError, match="model_name=.* is not allowed"):
        TrainConfig(model_name=name)


@pytest.mark.slow
def test_run_name_with_a_path_on_the_command_line():
    r = run_script("train.py", "--model_name=../../outside", "--max_iters=2")
    one_clear_line(r, "model_name='../../outside' is not allowed", "--trained_dir")


@pytest.mark.slow
def test_a_truncated_checkpoint(tmp_path):
    bad = tmp_path / "step_000010.pt"
    bad.write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(ValueError, match="step_000010.pt is not a readable checkpoint"):
        load_checkpoint(str(bad))
    torch.save({"model": {}}, bad)
    with pytest.raises(ValueError, match="not a checkpoint written by train.py"):
        load_checkpoint(str(bad))
    r = run_script("train.py", f"--resume={bad}")
    one_clear_line(r, "not a checkpoint written by train.py")


@pytest.mark.slow
def test_ci_fails_when_a_data_test_is_skipped(tmp_path):
    """Under CI=true a test skipped for want of ../shared/data fails the run (tests/conftest.py); elsewhere it is
    a skip."""
    shutil.copy(os.path.join(tools.REPO_DIR, "tests", "conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text("import pytest\n\n\n@pytest.mark.skipif(True, reason='no TinyStories sample "
                                        "at ../shared/data/x.txt')\ndef test_needs_data():\n    pass\n\n\n"
                                        "def test_other():\n    pass\n")
    env = {**os.environ, "PYTHONPATH": tools.REPO_DIR}
    for ci, rc in (("true", 1), ("", 0)):
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                           cwd=tmp_path, env={**env, "CI": ci}, capture_output=True, text=True, timeout=120)
        assert r.returncode == rc, r.stdout[-2000:]
        assert ("CI: 1 test(s) skipped because ../shared/data is missing" in r.stdout) == bool(ci)
