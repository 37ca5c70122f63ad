"""Issue 32: no file, limit or signal ends in a traceback, a full disk never costs a finished run, and a file that
no longer matches its run is refused. Every loader is tried on every kind of damage a file can take (cut short
anywhere, 0 bytes included, a byte changed); each time it gives back what was saved or one line naming the file."""

import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import needs_sample, tiny_configs

import files
import runs
import scoring
import tools
import trainer
from config import ModelConfig, TrainConfig, from_dict, replace, to_dict
from modules.model import Model
from train import main as train_main
from trainer import Stopped, train

TINY = dict(dim=16, num_layers=2, num_q_heads=2, num_kv_heads=1, max_seq_len=16, fs_periods=1, tokenizer="bpe_v2",
            vocab_len=128, dropout_rate=0.0)
BPE = tools.load_module(os.path.join(tools.TOKENIZERS_DIR, "bpe.py"))


def one_line(e: BaseException, *words) -> str:
    message = str(e)
    assert message and "\n" not in message and len(message) < 1000, message
    for word in words:
        assert word in message, (word, message)
    return message


@pytest.fixture
def saved(tmp_path):
    """A run folder written by runs.py itself (no training): model.pth and its fingerprint, both configs, a log of
    two rows, a checkpoint and a score file. {"root", "path", "model", "mcfg", "windows"}."""
    mcfg, tcfg = ModelConfig(**TINY), TrainConfig(model_name="run", max_iters=10, started="2026-01-01T00:00:00Z")
    torch.manual_seed(0)
    model = Model(mcfg).eval()
    path = str(tmp_path / "run")
    runs.save_model(path, model, mcfg, tcfg)
    columns = runs.log_columns(mcfg)
    rows = [{c: float(i + 1) / 7 for c in columns} | {"step": s, "tokens": 100 * s, "full_val": int(s == 10)}
            for i, s in enumerate((5, 10))]
    runs.write_log(os.path.join(path, "log_data.csv"), rows, columns)
    opt = torch.optim.AdamW(model.parameters())
    runs.write_checkpoint(path, 5, model, opt, torch.Generator(), {"log": rows[:1]}, mcfg, tcfg)
    inputs = torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 128, (6, 16 + mcfg.lookahead - 1), generator=torch.Generator().manual_seed(2))
    scoring.cached_scores("run", str(tmp_path), model, inputs, targets, (1,), lambda: scoring.score_windows(
        model, inputs, targets, 130, (1,), 16))
    return {"root": str(tmp_path), "path": path, "model": model, "mcfg": mcfg, "windows": (inputs, targets)}


# ---------------------------------------------------------------- 3. every loader survives every prefix


def damaged(data: bytes, seed: int, cuts: int = 20, flips: int = 20):
    """(what, bytes): `data` cut short at `cuts` points spread over it (0 bytes and one byte short included), and
    `flips` copies with one byte, chosen at random, changed to another."""
    n = len(data)
    for p in sorted({0, 1, n - 1, *(n * k // cuts for k in range(cuts))} - {n}):
        yield f"cut at {p} of {n}", data[:p]
    rng = random.Random(seed)
    for _ in range(flips):
        b, i = bytearray(data), rng.randrange(n)
        b[i] = (b[i] + rng.randrange(1, 256)) % 256
        yield f"byte {i} of {n} changed", bytes(b)


def survives(path: str, load, accept, seed: int = 0) -> dict:
    """Write each damaged version of `path` and load it: the load gives what `accept` takes, or a ValueError or
    FileNotFoundError of one line naming the file. Any other exception fails the test with the damage named.
    Returns how many versions were refused and how many loaded."""
    good = open(path, "rb").read()
    counts = {"refused": 0, "loaded": 0}
    try:
        for what, data in damaged(good, seed):
            with open(path, "wb") as f:
                f.write(data)
            try:
                result = load()
            except (ValueError, FileNotFoundError) as e:
                one_line(e, os.path.basename(path))
                counts["refused"] += 1
                continue
            except Exception as e:
                raise AssertionError(f"{os.path.basename(path)}, {what}: {type(e).__name__}: {e}") from e
            assert accept(what, data, result), f"{os.path.basename(path)}, {what}: loaded as something else"
            counts["loaded"] += 1
    finally:
        with open(path, "wb") as f:
            f.write(good)
    return counts


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_weights_and_their_fingerprint_survive_damage(saved):
    """model.pth: torch.load reads a changed byte without noticing, so its zip records' CRC-32 are checked first;
    every cut and every change that matters is refused. model_fingerprint.json: refused, or (whitespace, say) the
    same weights."""
    state = runs.cpu_state(saved["model"])

    def load():
        return runs.load_model(saved["path"])[0].state_dict()

    weights = survives(os.path.join(saved["path"], "model.pth"), load, lambda what, data, s: same_tensors(s, state))
    assert weights["refused"] >= 35
    survives(os.path.join(saved["path"], runs.FINGERPRINT), load, lambda what, data, s: same_tensors(s, state), 1)


def test_the_configs_survive_damage(saved):
    """model_config.json is checked against the config recorded with the weights, so a changed byte that still
    parses is refused unless the field only steers training (dropout, the future-sight loss weights).
    train_config.json: refused, or a valid TrainConfig (a changed digit reads as an edit: nothing can tell)."""
    trained = to_dict(saved["mcfg"])

    def model_config(what, data, loaded):
        return {k: v for k, v in to_dict(loaded).items() if k not in runs.TRAINING_ONLY_FIELDS} == \
            {k: v for k, v in trained.items() if k not in runs.TRAINING_ONLY_FIELDS}

    survives(os.path.join(saved["path"], "model_config.json"), lambda: runs.load_model(saved["path"])[2],
             model_config, 2)
    survives(os.path.join(saved["path"], "train_config.json"), lambda: runs.load_configs(saved["path"])[1],
             lambda what, data, tcfg: isinstance(tcfg, TrainConfig), 3)


def test_the_log_survives_damage(saved):
    """A log cut anywhere but at the end of a row is refused (every row train() writes ends with a newline); cut at
    a row's end it is the log of fewer evaluations, row for row the same."""
    before = runs.read_log(saved["path"])

    def accept(what, data, log):
        if what.startswith("cut"):
            return len(log) < len(before) and log.equals(before.iloc[:len(log)])
        return list(log.columns) == list(before.columns)  # a digit changed into another: reads as an edit

    survives(os.path.join(saved["path"], "log_data.csv"), lambda: runs.read_log(saved["path"]), accept, 4)


def test_checkpoints_and_scores_survive_damage(saved):
    ckpt_file = runs.last_checkpoint(saved["path"])
    state = runs.cpu_state(saved["model"])
    counts = survives(ckpt_file, lambda: runs.load_checkpoint(ckpt_file),
                      lambda what, data, ckpt: ckpt["step"] == 5 and same_tensors(ckpt["model"], state), 5)
    assert counts["refused"] >= 35
    scores_file = os.path.join(saved["path"], "scores", os.listdir(os.path.join(saved["path"], "scores"))[0])
    _, good = scoring.read_scores(scores_file, saved["mcfg"], 6, (1,))
    survives(scores_file, lambda: scoring.read_scores(scores_file, saved["mcfg"], 6, (1,))[1],
             lambda what, data, s: s.keys() == good.keys() and all(np.array_equal(s[k], good[k]) for k in s), 6)
    # a damaged score file is scored again and replaced, when the weights are there
    with open(scores_file, "wb") as f:
        f.write(b"")
    inputs, targets = saved["windows"]
    again = scoring.cached_scores("run", saved["root"], saved["model"], inputs, targets, (1,), lambda: good)
    assert np.array_equal(again["nll"], good["nll"]) and scoring.read_scores(scores_file, saved["mcfg"], 6, (1,))


def test_tokenizer_files_survive_damage(tmp_path):
    path = tmp_path / "128.json"
    shutil.copy(os.path.join(tools.TOKENIZERS_DIR, "bpe_v2", "models", "128.json"), path)
    good = BPE.Tokenizer.load(path)

    def accept(what, data, tok):  # cut: only the last newline can go; a changed id is another valid tokenizer
        return tok.merges == good.merges if what.startswith("cut") else isinstance(tok, BPE.Tokenizer)

    survives(str(path), lambda: BPE.Tokenizer.load(path), accept, 7)


def test_json_nesting_and_size_have_limits(saved, tmp_path):
    config = os.path.join(saved["path"], "model_config.json")
    for text in ("[" * 100_000 + "]" * 100_000, json.dumps({"dim": [[[[[[[[[[1]]]]]]]]]]}),
                 '{"dim": ' + "9" * 5000 + "}"):
        with open(config, "w") as f:
            f.write(text)
        with pytest.raises(ValueError) as err:
            runs.load_configs(saved["path"])
        one_line(err.value, "model_config.json")
    tok = tmp_path / "128.json"
    for text in ("[" * 100_000 + "]" * 100_000, json.dumps({"format": BPE.FORMAT, "trained_on": [[[[[[[[[[]]]]]]]]]]})):
        tok.write_text(text)
        with pytest.raises(ValueError) as err:
            BPE.Tokenizer.load(tok)
        one_line(err.value, "128.json")


def test_tokenizer_loading_is_linear_in_the_file(tmp_path):
    """Merges that chain (each joins the token before) would build strings whose total length grows with the square
    of the chain, or doubles at every merge: tokens longer than MAX_TOKEN_CHARS together are refused before any is
    built."""
    good = json.loads(open(os.path.join(tools.TOKENIZERS_DIR, "bpe_v2", "models", "128.json")).read())
    a = len(good["alphabet"])
    path = tmp_path / "chain.json"
    for merges in ([[0, 0]] + [[a + i, 0] for i in range(20_000)],  # one long chain: 20,000 merges
                   [[0, 0]] + [[a + i, a + i] for i in range(200)]):  # doubling
        model = {**good, "merges": merges, "vocab_len": a + len(merges)}
        path.write_text(json.dumps(model))
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match="brings the tokens' length, all together, past 16,777,216"):
            BPE.Tokenizer.load(path)
        assert time.perf_counter() - t0 < 2.0
    model = {**good, "alphabet": [chr(0x4E00 + i) for i in range(70_000)], "merges": []}
    path.write_text(json.dumps({**model, "vocab_len": 70_000}))
    with pytest.raises(ValueError, match="more than the 65,533"):
        BPE.Tokenizer.load(path)


@pytest.mark.slow
def test_empty_files_are_one_line_in_every_command(saved, tmp_path):
    """What a full disk or a killed copy leaves: a 0-byte model.pth or checkpoint (torch raises an error without a
    message on those)."""
    open(os.path.join(saved["path"], "model.pth"), "wb").close()
    ckpt = runs.last_checkpoint(saved["path"])
    open(ckpt, "wb").close()
    for script, *args in (("inference.py", "run", f"--trained_dir={saved['root']}", "--max_len=2"),
                          ("model_comparison.py", "run", f"--trained_dir={saved['root']}", "--num_sequences=2",
                           f"--out={tmp_path / 'c.png'}"),
                          ("train.py", f"--resume={ckpt}")):
        r = subprocess.run([sys.executable, script, *args], cwd=tools.REPO_DIR, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, (script, r.stderr[-2000:])
        assert "0 bytes" in r.stderr.strip().splitlines()[-1], (script, r.stderr[-500:])


# ---------------------------------------------------------------- 7. mismatches are caught


def test_a_config_edited_after_training_is_refused_by_name(saved):
    config = os.path.join(saved["path"], "model_config.json")
    good = json.load(open(config))
    for field, value in (("theta", 500.0), ("fs_memory", "causal"), ("dim", 32)):  # same shapes, then other ones
        json.dump({**good, field: value}, open(config, "w"))
        with pytest.raises(ValueError) as err:
            runs.load_model(saved["path"])
        one_line(err.value, f"{field}={value!r} (trained with {good[field]!r})", "model_config.json")
    json.dump({**good, "dropout_rate": 0.2}, open(config, "w"))  # steers training only
    assert runs.load_model(saved["path"])[2].dropout_rate == 0.2


def test_weights_replaced_or_not_finite_are_refused(saved):
    weights = os.path.join(saved["path"], "model.pth")
    torch.manual_seed(1)
    other = Model(saved["mcfg"])  # the same configuration, other weights (another seed's model.pth, say)
    torch.save(other.state_dict(), weights)
    with pytest.raises(ValueError) as err:
        runs.load_model(saved["path"])
    one_line(err.value, "model.pth is not the file that was saved with this run", runs.FINGERPRINT)
    os.remove(os.path.join(saved["path"], runs.FINGERPRINT))  # as a run saved before fingerprints: loads
    assert same_tensors(runs.load_model(saved["path"])[0].state_dict(), other.state_dict())
    state = other.state_dict()
    state["embedding.weight"][3, 1] = float("nan")
    torch.save(state, weights)
    with pytest.raises(ValueError) as err:
        runs.load_model(saved["path"])
    one_line(err.value, "holds NaN or infinite values in 1 tensor(s) (embedding.weight)")


def test_a_rebuilt_tokenizer_is_refused(saved):
    file = os.path.join(saved["path"], runs.FINGERPRINT)
    fp = json.load(open(file))
    assert fp["tokenizer_fingerprint"] and fp["model_config"] == to_dict(saved["mcfg"])
    json.dump({**fp, "tokenizer_fingerprint": "0" * 16}, open(file, "w"))
    with pytest.raises(ValueError) as err:
        runs.load_model(saved["path"])
    one_line(err.value, "is not the one", "rebuilt or replaced since")


def test_a_checkpoint_of_another_run_is_not_scored_as_this_one(saved, monkeypatch):
    ckpt = runs.load_checkpoint(runs.last_checkpoint(saved["path"]))
    model = Model(saved["mcfg"])
    other = from_dict(TrainConfig, {**ckpt["train_config"], "seed": 7})
    runs.write_checkpoint(saved["path"], 7, model, torch.optim.AdamW(model.parameters()), torch.Generator(),
                          {"log": []}, saved["mcfg"], other)
    monkeypatch.setattr(scoring, "evaluate", lambda *a, **k: pytest.fail("scored a foreign checkpoint"))
    with pytest.raises(ValueError, match="step_000007.pt is not a checkpoint of the run run"):
        scoring.checkpoint_scores("run", saved["root"])


# ---------------------------------------------------------------- 2. a full disk


def test_a_full_disk_leaves_the_previous_file_and_says_what_is_needed(tmp_path, monkeypatch):
    path = str(tmp_path / "x.bin")
    runs.write_atomically(path, b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(runs.DiskFullError) as err:
        runs.write_atomically(path, b"n" * 3_000_000)
    one_line(err.value, path, "it needs 3.0 MB", "is free on that disk", "the previous file is kept")
    assert open(path, "rb").read() == b"old" and os.listdir(tmp_path) == ["x.bin"]


@pytest.mark.slow
@needs_sample
def test_a_full_disk_at_any_write_of_a_run_loses_nothing(tmp_path, data_cache_dir, monkeypatch, capsys):
    """ENOSPC injected at each file a run writes in turn (configs, logs, the checkpoint, model.pth, its
    fingerprint): each time one line names the file and the space, every file already there is whole and as it
    was, no temporary file is left, and the checkpoint is kept whenever training got past it."""
    mcfg, tcfg = tiny_configs(data_cache_dir, max_iters=4, eval_interval=2, checkpoint_interval=2, model_name="r")
    writes, fsync = [], os.fsync

    def counting(fd):
        writes.append(fd)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", counting)
    train(mcfg, tcfg, trained_dir=str(tmp_path / "whole"), progress=False)
    assert len(writes) >= 9  # 2 configs, 2 logs, a checkpoint, configs, model.pth, fingerprint, the last log
    for k in range(len(writes)):
        root, state = tmp_path / f"full{k}", {}
        calls = {"n": 0}

        def full_at_k(fd, k=k, root=root, state=state, calls=calls):
            if calls["n"] == k:  # what the folder holds as the disk fills
                state.update({os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
                              for d, _, files in os.walk(root) for f in files if ".tmp" not in f})
                calls["n"] += 1
                raise OSError(errno.ENOSPC, "No space left on device")
            calls["n"] += 1
            fsync(fd)

        monkeypatch.setattr(os, "fsync", full_at_k)
        with pytest.raises(runs.DiskFullError) as err:
            train(mcfg, tcfg, trained_dir=str(root), progress=False)
        one_line(err.value, "no space left to write", "is free on that disk")
        left = {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
                for d, _, files in os.walk(root) for f in files}
        assert not [f for f in left if ".tmp" in f], k
        if "training" not in str(err.value):  # full before the first step: no folder is left to block the name
            assert not os.path.exists(root / "r"), k
        else:
            assert {f: v for f, v in left.items() if f in state} == state, k  # nothing there was touched
        ckpt = os.path.join(root, "r", "checkpoints", "step_000002.pt")
        if os.path.isfile(ckpt):  # kept until model.pth is written: and said so, until then
            assert runs.load_checkpoint(ckpt)["step"] == 2
            weights = os.path.join(root, "r", "model.pth")
            assert ("the last checkpoint" in str(err.value) and "--resume=" in str(err.value)) or (
                os.path.isfile(weights) and f"its weights are saved in {weights}" in str(err.value)), k
    monkeypatch.setattr(os, "fsync", fsync)
    # the command line: one line, exit code 2
    for module in (runs, files):  # runs checks the space up front, files words the message
        monkeypatch.setattr(module, "free_bytes", lambda path: 10_000)
    code = train_main([f"--data_path={tools.SAMPLE_PATH}", f"--data_cache_dir={data_cache_dir}", "--max_iters=2",
                       f"--trained_dir={tmp_path / 'tiny_disk'}", "--model_name=run", "--dim=32", "--num_layers=2",
                       "--fs_periods=0", "--max_seq_len=32"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "not enough space: the run would write about" in err and "only 10.0 KB is free" in err
    assert not os.path.exists(tmp_path / "tiny_disk" / "run")  # refused before its folder was made


# ---------------------------------------------------------------- 4. limits checked up front


def test_settings_that_cannot_fit_are_refused_before_anything_is_allocated(tmp_path, capsys):
    code = train_main(["--grad_accum_steps=1000000", "--max_iters=1", f"--trained_dir={tmp_path}"])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "grad_accum_steps=1000000" in line and "needs at least" in line and "GB free" in line
    mcfg, tcfg = ModelConfig(dim=100_000, num_layers=2, fs_periods=0), TrainConfig()
    with pytest.raises(ValueError, match="weights, gradients and AdamW's state"):
        trainer.check_memory(mcfg, tcfg, 1, "cpu")
    trainer.check_memory(ModelConfig(), TrainConfig(), 1, "cpu")  # the defaults fit


def test_a_runs_folder_that_cannot_hold_runs_is_refused_up_front(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("notes")
    for where in (afile, afile / "below"):
        assert train_main([f"--trained_dir={where}", "--max_iters=1"]) == 2
        assert "is a file, and runs are folders" in capsys.readouterr().err.strip().splitlines()[-1]
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user who may not write there
    assert train_main([f"--trained_dir={tmp_path / 'ro'}", "--max_iters=1"]) == 2
    assert "is read-only for this user" in capsys.readouterr().err
    assert afile.read_text() == "notes"


# ---------------------------------------------------------------- 5. signals


def send_at_step(monkeypatch, step: int, *signals):
    """Send `signals` to this process as training step `step` (0-based) begins."""
    lr_at = trainer.lr_at

    def sending(s, cfg):
        if s == step and not sending.sent:
            sending.sent = True
            for sig in signals:
                os.kill(os.getpid(), sig)
        return lr_at(s, cfg)

    sending.sent = False
    monkeypatch.setattr(trainer, "lr_at", sending)


@pytest.mark.slow
@needs_sample
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.usefixtures("default_stop_signals")
def test_sigterm_and_sighup_checkpoint_and_stop_like_ctrl_c(tmp_path, data_cache_dir, monkeypatch, capsys, sig):
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="sig", max_iters=12, eval_interval=4)
    send_at_step(monkeypatch, 5, sig)
    run = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    ckpt = os.path.join(str(tmp_path), "sig", "checkpoints", "step_000006.pt")
    assert run.stopped_at == 6 and run.resume_from == ckpt
    err = capsys.readouterr().err
    assert f"{signal.Signals(sig).name}: stopping after this step" in err and f"--resume={ckpt}" in err
    assert signal.getsignal(sig) is not None and signal.getsignal(sig) != signal.getsignal(signal.SIGINT)


@pytest.mark.slow
@needs_sample
def test_closing_the_terminal_checkpoints_the_run(tmp_path, data_cache_dir):
    """train.py on a terminal that closes (an ssh session lost): SIGHUP, and every write to the terminal fails from
    then on; the run still finishes its step, checkpoints it and exits with 130."""
    import pty
    import select

    pid, fd = pty.fork()
    if pid == 0:  # the child: train.py with the pseudo-terminal as its terminal
        os.chdir(tools.REPO_DIR)
        os.environ["OMP_NUM_THREADS"] = "1"
        os.execv(sys.executable, [sys.executable, "train.py", f"--data_path={tools.SAMPLE_PATH}",
                                  f"--data_cache_dir={data_cache_dir}", f"--trained_dir={tmp_path}", "--dim=32",
                                  "--num_layers=2", "--fs_periods=0", "--max_seq_len=32", "--batch_size=4",
                                  "--max_iters=100000", "--eval_interval=50000", "--compile=false", "--model_name=h"])
    started, t0 = None, time.time()
    while time.time() - t0 < 120 and (started is None or time.time() - started < 1.5):
        if started is None and os.path.isfile(tmp_path / "h" / "train_config.json"):
            started = time.time()
        if select.select([fd], [], [], 0.1)[0]:
            try:
                os.read(fd, 65536)  # the terminal shows what it is sent
            except OSError:
                break
    os.close(fd)  # the terminal closes
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 130
    ckpt = runs.last_checkpoint(str(tmp_path / "h"))
    assert ckpt and runs.load_checkpoint(ckpt)["step"] > 0


@pytest.mark.slow
@needs_sample
@pytest.mark.usefixtures("default_stop_signals")
def test_a_second_signal_stops_at_once_with_one_line(tmp_path, data_cache_dir, monkeypatch, capsys):
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="twice", max_iters=12, eval_interval=4, checkpoint_interval=4)
    send_at_step(monkeypatch, 5, signal.SIGINT, signal.SIGINT)
    with pytest.raises(Stopped) as err:
        train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    ckpt = os.path.join(str(tmp_path), "twice", "checkpoints", "step_000004.pt")
    one_line(err.value, "stopped at once during step 6 of 12 (Ctrl-C twice)", f"python train.py --resume={ckpt}")
    assert list(tools.read_log("twice", str(tmp_path))["step"]) == [4]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the command line: exit code 130, one line, no traceback
    send_at_step(monkeypatch, 1, signal.SIGTERM, signal.SIGTERM)
    code = train_main([f"--data_path={tools.SAMPLE_PATH}", f"--data_cache_dir={data_cache_dir}", "--max_iters=4",
                       f"--trained_dir={tmp_path}", "--model_name=cli", "--dim=32", "--num_layers=2",
                       "--fs_periods=0"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and lines[-1].startswith("train.py: stopped at once during step 2 of 4 (SIGTERM twice)")
    assert "there is no checkpoint to continue from" in lines[-1]


def test_the_resume_command_under_torchrun_has_the_same_processes(monkeypatch):
    assert trainer.resume_command("c.pt") == "python train.py --resume=c.pt"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert trainer.resume_command("c.pt", 2) == "torchrun --standalone --nproc_per_node=2 train.py --resume=c.pt"
    assert trainer.resume_command("c.pt", 4).startswith("torchrun --nnodes=2 --nproc_per_node=2 ")
    e = trainer.NonFiniteError(7, float("nan"), float("inf"), "c.pt", TrainConfig(lr_max=3e-3), world=2)
    assert "torchrun --standalone --nproc_per_node=2 train.py --resume=c.pt --lr_max=0.001" in str(e)


@pytest.mark.slow
@needs_sample
def test_ctrl_c_under_torchrun_prints_the_torchrun_resume_command(tmp_path, data_cache_dir):
    """torchrun passes a Ctrl-C on to every worker once: they finish the step together, checkpoint it, and the first
    prints the command that resumes with as many processes. (torchrun itself then prints its own SignalException
    traceback, from its launcher process: nothing of train.py's.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
         f"--data_path={tools.SAMPLE_PATH}", f"--data_cache_dir={data_cache_dir}", f"--trained_dir={tmp_path}",
         "--dim=32", "--num_layers=2", "--fs_periods=0", "--max_seq_len=32", "--batch_size=4", "--max_iters=100000",
         "--eval_interval=50000", "--compile=false", "--model_name=ddp"],
        cwd=tools.REPO_DIR, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(240):  # the folder is made once the data is loaded; then a few steps
            if os.path.isfile(tmp_path / "ddp" / "train_config.json"):
                break
            time.sleep(0.5)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    ckpt = runs.last_checkpoint(str(tmp_path / "ddp"))
    assert ckpt and runs.load_checkpoint(ckpt)["world"] == 2, err[-3000:]
    assert f"Continue with:\n  torchrun --standalone --nproc_per_node=2 train.py --resume={ckpt}" in err
    assert 'trainer.py"' not in err and 'train.py", line' not in err, err[-3000:]


@pytest.mark.slow
@needs_sample
def test_interrupted_seeds_say_which_did_not_run_and_how(tmp_path, data_cache_dir, monkeypatch, capsys):
    args = [f"--data_path={tools.SAMPLE_PATH}", f"--data_cache_dir={data_cache_dir}", "--max_iters=4",
            "--eval_interval=2", f"--trained_dir={tmp_path}", "--dim=32", "--num_layers=2", "--fs_periods=0"]
    send_at_step(monkeypatch, 1, signal.SIGTERM)
    assert train_main([*args, "--model_name=g", "--seeds=0,1,2"]) == 130
    err = capsys.readouterr().err
    ckpt = os.path.join(str(tmp_path), "g_s0", "checkpoints", "step_000002.pt")
    assert f"seed 0 resumes from its checkpoint: python train.py --resume={ckpt}" in err
    line = next(x for x in err.splitlines() if "did not run" in x)
    assert "seed(s) 1, 2 did not run: python train.py " in line and line.endswith("--model_name=g --seeds=1,2")
    monkeypatch.undo()
    command = shlex.split(line.split("did not run: ", 1)[1])
    assert train_main(command[2:]) == 0  # the printed command trains the seeds that did not run
    assert train_main([f"--resume={ckpt}"]) == 0
    assert sorted(os.listdir(tmp_path)) == ["g_s0", "g_s1", "g_s2"]
    assert {tools.load_configs(n, str(tmp_path))[1].group for n in os.listdir(tmp_path)} == {"g"}


# ---------------------------------------------------------------- 6. resuming with other optimisation settings


@pytest.mark.slow
@needs_sample
def test_resuming_with_a_lower_learning_rate_is_allowed_and_recorded(tmp_path, data_cache_dir, monkeypatch, capsys):
    mcfg, tcfg = tiny_configs(data_cache_dir, model_name="lr", max_iters=12, eval_interval=4)
    send_at_step(monkeypatch, 5, signal.SIGINT)
    cut = train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    monkeypatch.undo()
    for args, words in ((["--dim=64"], ["['dim']", "the checkpoint's weights are the model it configures"]),
                        (["--batch_size=4"], ["['batch_size']", "the batches the run reads follow from it"]),
                        (["--max_iters=50"], ["learning-rate schedule's shape"])):
        assert train_main([f"--resume={cut.resume_from}", *args]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert all(w in line for w in words) and "may change lr_init, lr_max" in line, line
    made, make_optimizer = [], trainer.make_optimizer
    monkeypatch.setattr(trainer, "make_optimizer", lambda *a: made.append(make_optimizer(*a)) or made[-1])
    assert train_main([f"--resume={cut.resume_from}", "--lr_max=1e-3", "--grad_clip=0.5", "--weight_decay=0"]) == 0
    assert "from step 6 on: lr_max 0.01 -> 0.001, grad_clip 1.0 -> 0.5, weight_decay 0.05 -> 0" in \
        capsys.readouterr().err
    assert [g["weight_decay"] for g in made[0].param_groups] == [0, 0]  # the checkpoint's optimizer, changed
    saved = tools.load_configs("lr", str(tmp_path))[1]
    assert saved.lr_max == 1e-3 and saved.grad_clip == 0.5
    assert saved.changes == [{"step": 6, "lr_max": [0.01, 0.001], "grad_clip": [1.0, 0.5], "weight_decay": [0.05, 0]}]
    log = tools.read_log("lr", str(tmp_path))
    assert list(log["step"]) == [4, 8, 12] and log["lr"].iloc[1] == pytest.approx(trainer.lr_at(8, saved), rel=1e-5)
    assert trainer.lr_at(7, saved) < trainer.lr_at(7, replace(saved, lr_max=1e-2))
    # the checkpoint from before the change still belongs to the run
    assert runs.checkpoint_owner(cut.resume_from, runs.load_checkpoint(cut.resume_from)) == str(tmp_path / "lr")


def test_a_run_or_group_named_twice_in_any_form_is_refused(tmp_path, capsys):
    """A run named twice (the same name, a path to its folder, a link to it) would count as two seeds; a group
    label given twice would drop the first group's runs. Each is one line, and one run named in two forms in one
    group's list and the positional names is still one run."""
    import compare
    import model_comparison as mc

    root = tmp_path / "runs"
    for name in ("a_s0", "a_s1"):
        (root / name).mkdir(parents=True)
        (root / name / "model_config.json").write_text("{}")
        (root / name / "model.pth").write_bytes(b"")
    os.symlink(root / "a_s0", root / "link")
    forms = ["a_s0", str(root / "a_s0"), str(root / "a_s0") + os.sep, os.path.relpath(root / "a_s0"), "link"]
    assert runs.resolve_names(["a_s0", "a_s1"], str(root)) == ["a_s0", "a_s1"]
    for other in forms:
        with pytest.raises(ValueError, match="named twice") as e:
            runs.resolve_names(["a_s0", "a_s1", other], str(root))
        assert "name each run once" in str(e.value) and "\n" not in str(e.value)
    assert compare.find_groups(["a_s0"], str(root), {"g": [str(root / "a_s0"), "a_s1"]}) == {"g": ["a_s0", "a_s1"]}
    with pytest.raises(ValueError, match="in groups 'x' and 'y'"):
        compare.find_groups(["a_s1"], str(root), {"x": ["a_s0"], "y": ["link"]})
    with pytest.raises(ValueError, match="in group 'x' twice"):
        compare.find_groups(["a_s1"], str(root), {"x": ["a_s0", str(root / "a_s0")]})
    assert runs.same_run("a_s0", "link", str(root)) and not runs.same_run("a_s0", "a_s1", str(root))
    assert not runs.same_run("a_s0", "nope", str(root))
    assert mc.main(["a_s0", "a_s1", f"--trained_dir={root}", "--group=g=a_s0", "--group=g=a_s1"]) == 2
    err = capsys.readouterr().err
    assert "--group=g=... is given twice" in err and "Traceback" not in err
    assert mc.main(["a_s0", "link", f"--trained_dir={root}"]) == 2
    err = capsys.readouterr().err
    assert "named twice, as 'a_s0' and 'link'" in err and "Traceback" not in err


def test_a_full_disk_at_model_pth_without_a_checkpoint_asks_at_a_terminal(tmp_path, data_cache_dir, monkeypatch,
                                                                          capsys):
    """No checkpoint keeps the weights of a run that fills the disk as it writes model.pth: at a terminal the run
    asks for space and writes them when Enter is pressed; the end of the input (or no terminal) gives up with the
    one line that says they are lost."""
    mcfg, tcfg = tiny_configs(data_cache_dir, max_iters=2, eval_interval=2, model_name="r")
    fsync, full = os.fsync, {"left": 0}

    def full_at_weights(fd):
        if "model.pth" in os.readlink(f"/proc/self/fd/{fd}") and full["left"]:
            full["left"] -= 1
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_at_weights)
    asked = []
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda *a: asked.append(1) or "")
    full["left"] = 2  # the disk is full at the first write and the first retry, then space was freed
    run = train(mcfg, tcfg, trained_dir=str(tmp_path / "a"), progress=False)
    assert len(asked) == 2 and os.path.isfile(os.path.join(run.path, "model.pth"))
    assert same_tensors(torch.load(os.path.join(run.path, "model.pth")), runs.cpu_state(run.model))
    assert capsys.readouterr().err.count("press Enter to write them again") == 2

    def no_more_input(*a):
        raise EOFError

    monkeypatch.setattr("builtins.input", no_more_input)
    full["left"] = 1
    with pytest.raises(runs.DiskFullError) as err:
        train(mcfg, tcfg, trained_dir=str(tmp_path / "b"), progress=False)
    one_line(err.value, "its weights are not saved", "there is no checkpoint")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    monkeypatch.setattr("builtins.input", lambda *a: pytest.fail("asked without a terminal"))
    full["left"] = 1
    with pytest.raises(runs.DiskFullError):
        train(mcfg, tcfg, trained_dir=str(tmp_path / "c"), progress=False)
