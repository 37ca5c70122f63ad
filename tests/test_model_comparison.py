"""model_comparison.py: loss curves, teacher-forced evaluation, the summary table, the per-position printout,
the command line and the notebook, on the two tiny runs that train.train() writes for the whole suite
(conftest.tiny_runs: a baseline and a FutureFormer, 40 steps on the TinyStories sample)."""

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import compare
import model_comparison as mc
import scoring
import stats
import tools
from config import ModelConfig, TrainConfig, replace
from modules.model import Model
from runs import FINGERPRINT

pytestmark = pytest.mark.skipif(not os.path.exists(tools.SAMPLE_PATH),
                                reason=f"no TinyStories sample at {tools.SAMPLE_PATH}")

NAMES = ["tiny_base", "tiny_ff"]  # conftest.tiny_runs: a baseline and a FutureFormer (fs_periods=2)


@pytest.fixture(scope="module")
def runs(tiny_runs):
    """(trained_dir, names) of the two tiny runs that train.train() wrote."""
    return tiny_runs["trained_dir"], list(NAMES)


def png_ok(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- plots


@pytest.mark.slow
def test_plot_curves_writes_png_with_a_line_per_run(runs, tmp_path):
    root, names = runs
    png = tmp_path / "curves.png"
    fig = mc.plot_curves(names, trained_dir=root, path=str(png))
    assert png_ok(png)
    assert len(fig.axes) == 2
    rows = len(tools.read_log(names[0], root))
    assert rows >= 3
    for ax in fig.axes:
        labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
        assert labels == names
        solid = [line for line in ax.get_lines() if line.get_linestyle() == "-"]
        assert len(solid) == 2 and all(len(line.get_xdata()) == rows for line in solid)
        dots = [line for line in ax.get_lines() if line.get_marker() == "o"]  # the full-validation rows
        assert len(dots) == 2 and all(len(line.get_xdata()) == 1 for line in dots)
    mc.plt.close(fig)

    fig = mc.plot_curves(names, metrics=("ntp_loss",), splits=("train", "val"), x="step", log_x=True, trim=2,
                         trained_dir=root)
    styles = sorted(line.get_linestyle() for line in fig.axes[0].get_lines() if line.get_linestyle() != "None")
    assert styles == ["-", "-", "--", "--"]  # val solid, train dashed, for both runs
    assert all(len(line.get_xdata()) == rows - 2 for line in fig.axes[0].get_lines()
               if line.get_linestyle() != "None")  # two rows trimmed
    mc.plt.close(fig)

    fig = mc.plot_curves(names, metrics="val_fs_loss_2", trained_dir=root)  # the baseline has no such column
    assert [line.get_label() for line in fig.axes[0].get_lines() if line.get_linestyle() == "-"] == ["tiny_ff"]
    mc.plt.close(fig)
    with pytest.raises(ValueError, match="x='time'"):
        mc.plot_curves(names, x="time", trained_dir=root)
    with pytest.raises(ValueError, match="no column 'val_nope'"):
        mc.plot_curves(names, metrics=("val_nope",), trained_dir=root)


def test_plot_curves_leaves_out_a_run_still_training(runs, tmp_path):
    """A run whose folder holds its configs but no log yet (it is training) is left out with a warning; the
    others are drawn."""
    import shutil

    root, names = runs
    shutil.copytree(os.path.join(root, names[0]), tmp_path / names[0])
    os.makedirs(tmp_path / "training_s0")
    for f in ("model_config.json", "train_config.json"):
        shutil.copy(os.path.join(root, names[1], f), tmp_path / "training_s0" / f)
    with pytest.warns(UserWarning, match="training_s0: .*left out of the plot"):
        fig = mc.plot_curves([names[0], "training_s0"], trained_dir=str(tmp_path))
    assert [line.get_label() for line in fig.axes[0].get_lines() if line.get_linestyle() == "-"] == [names[0]]
    mc.plt.close(fig)


# ---------------------------------------------------------------- evaluation


@pytest.mark.slow
def test_evaluate_same_windows_deterministic_and_consistent(runs):
    root, names = runs
    ev = mc.evaluate(names, num_sequences=24, batch_size=10, trained_dir=root)
    assert list(ev.index) == names
    assert ev["windows"].nunique() == 1 and (ev["sequences"] == 24).all()
    assert ((ev["top1_acc"] >= 0) & (ev["top1_acc"] <= 1) & (ev["top5_acc"] <= 1)).all()
    assert (ev["top5_acc"] >= ev["top1_acc"]).all() and (ev["top1_acc"] > 0).all()
    mcfg, tcfg = tools.load_configs(names[0], root)
    bpt = tools.get_data(mcfg, tcfg).meta["val"]["bytes_per_token"]
    assert np.allclose(ev["bpb"], [tools.bits_per_byte(v, bpt) for v in ev["ntp_loss"]])
    assert np.allclose(ev["ppl"], np.exp(ev["ntp_loss"]))
    assert ev.loc["tiny_base", ["fs_cos_1", "fs_cos_2"]].isna().all()
    ff = ev.loc["tiny_ff"]
    for k in (1, 2):  # fs_loss='cosine' is 1 - cos, so the direct cosine and the model's loss agree
        assert -1 <= ff[f"fs_cos_{k}"] <= 1
        assert ff[f"fs_cos_{k}"] == pytest.approx(1 - ff[f"fs_loss_{k}"], abs=1e-5)
    again = mc.evaluate(names, num_sequences=24, batch_size=7, trained_dir=root)  # other batching, same numbers
    pd.testing.assert_frame_equal(ev, again, check_exact=False, rtol=1e-5)


@pytest.mark.slow
def test_evaluate_whole_split_matches_the_full_validation_log_row(runs):
    root, names = runs
    ev = mc.evaluate(names, num_sequences=None, batch_size=64, trained_dir=root)
    for name in names:
        log = tools.read_log(name, root)
        assert ev.loc[name, "ntp_loss"] == pytest.approx(log["val_ntp_loss"].iloc[-1], rel=1e-5)
        data = tools.get_data(*tools.load_configs(name, root))
        assert ev.loc[name, "targets"] == len(data.val) - 1  # every id but the first is a target once


@pytest.mark.slow
def test_trained_beats_untrained_and_object_models_need_data(runs):
    root, names = runs
    mcfg, tcfg = tools.load_configs("tiny_ff", root)
    data = tools.get_data(mcfg, tcfg)
    ev = mc.evaluate({"untrained": Model(mcfg), "trained": "tiny_ff"}, num_sequences=16, data=data,
                     trained_dir=root)
    assert ev.loc["trained", "ntp_loss"] < ev.loc["untrained", "ntp_loss"] - 0.5
    assert ev.loc["trained", "top5_acc"] > ev.loc["untrained", "top5_acc"]
    with pytest.raises(ValueError, match="needs data="):
        mc.evaluate([Model(mcfg)], num_sequences=4)
    with pytest.raises(ValueError, match="more than once"):
        mc.evaluate(["tiny_ff", "tiny_ff"], num_sequences=4, trained_dir=root)


@pytest.mark.parametrize("fs_loss", ["bce", "rank"])
def test_evaluate_vocabulary_future_sight(data_cache_dir, fs_loss):
    mcfg = ModelConfig(dim=32, num_layers=3, num_q_heads=2, max_seq_len=32, fs_periods=2, fs_loss=fs_loss,
                       dropout_rate=0.0, vocab_len=1024)
    data = tools.get_data(mcfg, TrainConfig(data_path=tools.SAMPLE_PATH, data_cache_dir=str(data_cache_dir)))
    ev = mc.evaluate([Model(mcfg)], num_sequences=8, data=data)
    assert ev[["fs_cos_1", "fs_cos_2", "fs_loss_1", "fs_loss_2"]].notna().all(axis=None)


# ---------------------------------------------------------------- the table


@pytest.mark.slow
def test_summary_table(runs):
    root, names = runs
    table = mc.summary_table(names, trained_dir=root, num_sequences=16)
    assert list(table.index) == names
    for col in ("fs_periods", "params", "steps", "tokens", "wall_s", "tokens_per_s", "val_ntp_loss", "val_bpb",
                "val_from", "eval_ntp_loss", "eval_bpb", "top1_acc", "top5_acc", "fs_cos_1", "fs_cos_2"):
        assert col in table.columns, col
    for name in names:
        model, _, _ = tools.load_model(name, root)
        log = tools.read_log(name, root)
        row = table.loc[name]
        assert row["params"] == model.num_params()
        assert row["tokens"] == log["tokens"].iloc[-1] and row["steps"] == log["step"].iloc[-1] > 0
        assert row["wall_s"] == pytest.approx(log["elapsed_s"].iloc[-1])
        assert row["tokens_per_s"] == pytest.approx(log["tokens_per_s"].iloc[-1])
        assert row["val_from"] == "full" and row["val_ntp_loss"] == pytest.approx(log["val_ntp_loss"].iloc[-1])
        assert 0 <= row["top1_acc"] <= row["top5_acc"] <= 1
        assert row["eval_bpb"] == pytest.approx(row["eval_ntp_loss"] / row["val_ntp_loss"] * row["val_bpb"])
    assert table.loc["tiny_base", "params"] < table.loc["tiny_ff", "params"]
    text = mc.format_table(table)
    assert "tiny_ff" in text and "eval_bpb" in text and "nan" not in text.lower()
    no_eval = mc.summary_table(names, trained_dir=root, num_sequences=0)
    assert "top1_acc" not in no_eval.columns and no_eval["params"].tolist() == table["params"].tolist()
    md = mc.format_table(table, markdown=True, columns=["params", "val_bpb", "val_from", "top5_acc"])
    lines = md.splitlines()
    assert lines[0] == "| model | params | val_bpb | val_from | top5_acc |"
    assert lines[1] == "| --- | ---: | ---: | --- | ---: |" and len(lines) == 2 + len(names)
    ff = lines[2 + names.index("tiny_ff")]
    assert ff.startswith("| tiny_ff | ") and f"{table.loc['tiny_ff', 'val_bpb']:.4f}" in ff
    assert f"{int(table.loc['tiny_ff', 'params']):,}" in ff
    with pytest.raises(ValueError, match="no column.*val_bbp.*its columns"):
        mc.format_table(table, columns=["val_bbp"])


# ---------------------------------------------------------------- per-position printout


@pytest.mark.slow
def test_compare_samples_is_each_runs_own_generation(runs):
    from inference import generate

    root, names = runs
    out = mc.compare_samples(names, "Once upon a time", max_gen_len=12, trained_dir=root, device="cpu")
    assert list(out) == names
    for name in names:
        model, tok, _ = tools.load_model(name, root)
        assert out[name] == generate("Once upon a time", model, tok, max_gen_len=12, temperature=0)
        assert out[name].startswith("Once upon a time")
    sampled = mc.compare_samples(names[:1], "Tom", max_gen_len=12, temperature=1.0, seed=3, trained_dir=root, top_k=20)
    assert sampled == mc.compare_samples(names[:1], "Tom", max_gen_len=12, temperature=1.0, seed=3, trained_dir=root,
                                         top_k=20)  # seeded: the same text again
    with pytest.raises(ValueError, match="max_gen_len"):
        mc.compare_samples(names, max_gen_len=-1, trained_dir=root)


def test_show_predictions(runs):
    root, _ = runs
    out = io.StringIO()
    text = "Once upon a time, there was a little girl named Lily."
    rows = mc.show_predictions("tiny_ff", text=text, topk=5, trained_dir=root, file=out)
    printed = out.getvalue().splitlines()
    tok = tools.get_tokenizer("bpe_v2", 1024)
    n = len(tok.encode(text, bos=True)) - 1
    assert len(rows) == n and len(printed) == n + 3
    assert "'Once'" in printed[2] and "<bos>" in printed[2]
    for r in rows.itertuples():
        pieces = [p for p, _ in r.predictions]
        assert len(pieces) == 5 and (r.rank > 0) == (r.target in pieces)
        assert r.rank == 0 or pieces[r.rank - 1] == r.target
        assert all(a[1] >= b[1] for a, b in zip(r.predictions, r.predictions[1:]))
    assert (rows["rank"] > 0).any() and sum("*" in line for line in printed[2:-1]) == (rows["rank"] > 0).sum()
    assert printed[-1].startswith("top-1 ")

    out = io.StringIO()
    rows = mc.show_predictions("tiny_base", trained_dir=root, max_positions=5, index=3, file=out)
    T = tools.load_configs("tiny_base", root)[0].max_seq_len
    assert len(rows) == T and "validation window 3" in out.getvalue() and f"{T - 5} more positions" in out.getvalue()
    with pytest.raises(ValueError, match="index=100000 is not allowed"):
        mc.show_predictions("tiny_base", trained_dir=root, index=100_000, file=out)


# ---------------------------------------------------------------- command line and notebook


def run_cli(*args):
    return subprocess.run([sys.executable, "model_comparison.py", *args], cwd=tools.REPO_DIR, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_cli_prints_table_and_writes_png(runs, tmp_path):
    root, names = runs
    png = tmp_path / "cmp.png"
    r = run_cli(*names, f"--trained_dir={root}", f"--out={png}", "--num_sequences=8", "--x=step", "--splits=train,val")
    assert r.returncode == 0, r.stderr
    assert png_ok(png) and str(png) in r.stdout
    assert all(name in r.stdout for name in names) and "top5_acc" in r.stdout and "eval_bpb" in r.stdout
    r = run_cli(*names, f"--trained_dir={root}", f"--out={png}", "--num_sequences=8", "--markdown",
                "--columns=params,val_bpb,top1_acc")
    assert r.returncode == 0, r.stderr
    assert "| model | params | val_bpb | top1_acc |" in r.stdout and "eval_bpb" not in r.stdout
    r = run_cli(*names, f"--trained_dir={root}", f"--out={png}", "--num_sequences=0", "--prompt=Once upon",
                "--max_len=5")
    assert r.returncode == 0, r.stderr
    assert all(f"{name} (greedy):\nOnce upon" in r.stdout for name in names)


@pytest.mark.slow
def test_cli_missing_name_and_no_runs(runs, tmp_path, capsys):
    root, _ = runs
    r = run_cli("tiny_fff", f"--trained_dir={root}")
    assert r.returncode == 2
    assert "no trained model 'tiny_fff'" in r.stderr and "Did you mean 'tiny_ff'" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert mc.main([f"--trained_dir={tmp_path}"]) == 2
    assert "no trained runs" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_runs(runs, tmp_path):
    papermill = pytest.importorskip("papermill")
    root, names = runs
    nb = os.path.join(tools.REPO_DIR, "model_comparison.ipynb")
    with open(nb, encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    assert "parameters" in cells[1]["metadata"].get("tags", []) and "names =" in "".join(cells[2]["source"])
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(nb, str(out), cwd=tools.REPO_DIR, kernel_name="python3", progress_bar=False,
                               parameters={"trained_dir": root, "names": names, "num_sequences": 8,
                                           "show_positions": 4})
    text = out.read_text()
    assert "top5_acc" in text and "image/png" in text and "true next" in text and "95% interval" in text
    assert all(name in text for name in names)


# ---------------------------------------------------------------- paired comparisons and seed groups


@pytest.fixture(scope="module")
def seed_runs(tiny_runs, tmp_path_factory, data_cache_dir):
    """A trained/ folder with three seeds of a tiny baseline (group "tb", as train.py --seeds writes them),
    two seeds of a tiny FutureFormer named tf_s0, tf_s1 (grouped by name only), and copies of the shared tiny
    baseline's folder under three names (identical weights; copy_official records the official validation
    text as its own)."""
    import shutil

    from conftest import tiny_configs

    from train import train, train_seeds

    root = tmp_path_factory.mktemp("seed_runs")
    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, model_name="tb", max_iters=20)
    train_seeds(mcfg, tcfg, [0, 1, 2], trained_dir=str(root), progress=False)
    for seed in (0, 1):
        mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=2, model_name=f"tf_s{seed}", max_iters=20, seed=seed)
        train(mcfg, tcfg, trained_dir=str(root), progress=False)
    for name in ("copy_a", "copy_b", "copy_official"):
        shutil.copytree(os.path.join(tiny_runs["trained_dir"], "tiny_base"), root / name)
    cfg_path = root / "copy_official" / "train_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(model_name="copy_official", val_data_path=tools.VALID_SAMPLE_PATH, val_text=None)  # read again
    cfg_path.write_text(json.dumps(cfg))
    return str(root)


@pytest.mark.slow
def test_find_groups(seed_runs):
    names = ["copy_a", "tb_s0", "tb_s1", "tb_s2", "tf_s0", "tf_s1"]
    assert mc.find_groups(names, seed_runs) == {"copy_a": ["copy_a"], "tb": ["tb_s0", "tb_s1", "tb_s2"],
                                                "tf": ["tf_s0", "tf_s1"]}
    assert mc.find_groups(["copy_a", "tb_s0"], seed_runs, {"both": ["copy_a", "copy_b"]}) == {
        "both": ["copy_a", "copy_b"], "tb": ["tb_s0"]}
    with pytest.raises(ValueError, match="in groups"):
        mc.find_groups(["copy_a"], seed_runs, {"x": ["copy_a"], "y": ["copy_a"]})
    with pytest.raises(FileNotFoundError, match="no trained model 'nope'"):
        mc.find_groups(["nope"], seed_runs)


def test_compare_identical_runs_differ_by_exactly_zero(seed_runs):
    table = mc.compare(["copy_a", "copy_b"], trained_dir=seed_runs)
    row = table.loc["copy_b"]
    assert row["d_ntp"] == 0.0 and row["lo_pct"] == 0.0 and row["hi_pct"] == 0.0
    assert row["verdict"] == "not resolved" and row["covers"] == "windows only"
    assert table.loc["copy_a", "verdict"] == "reference"
    assert "not seed noise" in " ".join(table.attrs["notes"])


@pytest.mark.slow
def test_compare_groups_with_seed_noise_on_the_official_text(seed_runs):
    runs = ["tb_s0", "tb_s1", "tb_s2", "tf_s0", "tf_s1", "copy_a"]
    table = mc.compare(runs, reference="tb_s1", trained_dir=seed_runs, val_data_path=tools.VALID_SAMPLE_PATH)
    assert list(table.index) == ["tb", "tf", "copy_a"] and table.attrs["reference"] == "tb"
    assert table.loc["tb", "runs"] == 3 and table.loc["tf", "runs"] == 2 and table.loc["tb", "seed_sd_pct"] > 0
    for label in ("tf", "copy_a"):
        row = table.loc[label]
        assert row["covers"] == "windows and seeds"
        assert row["lo_pct"] <= row["d_pct"] <= row["hi_pct"]
        assert (row["verdict"] == "not resolved") == (row["lo_pct"] <= 0 <= row["hi_pct"])
    # the group's row is the mean over its seeds, scored window by window on the official validation text
    ev = mc.evaluate(runs, trained_dir=seed_runs, val_data_path=tools.VALID_SAMPLE_PATH)
    assert table.loc["tb", "ntp_loss"] == pytest.approx(ev.loc[["tb_s0", "tb_s1", "tb_s2"], "ntp_loss"].mean())
    official = tools.get_data(*tools.load_configs("tb_s0", seed_runs)[:1],
                              TrainConfig(data_path=tools.VALID_SAMPLE_PATH, val_data_path=tools.VALID_SAMPLE_PATH))
    assert table.attrs["targets"] == ev["targets"].iloc[0] == len(official.val) - 1
    notes = " ".join(table.attrs["notes"])
    assert "seeds per group" in notes and "cannot be told from 0" in notes
    text = mc.format_comparison(table)
    assert "95% interval" in text and "windows and seeds" in text and "tb = tb_s0, tb_s1, tb_s2" in text
    md = mc.format_comparison(table, markdown=True)
    assert md.splitlines()[0].startswith("| model | runs | ntp_loss | bpb |") and "| `tf` | 2 |" in md
    with pytest.raises(ValueError, match="reference='nope'"):
        mc.compare(runs, reference="nope", trained_dir=seed_runs)


@pytest.mark.slow
def test_compare_paired_pairs_seeds_by_their_recorded_seed(seed_runs, monkeypatch, tmp_path):
    """paired=True hands stats.seed_paired_interval seed k of each side in the same row, whatever order the
    groups list their runs in, and refuses groups whose seeds differ."""
    seen = []
    real = stats.seed_paired_interval

    def spy(nll_a, nll_b, counts, *args):
        seen.append((nll_a.sum(1) / counts.sum(), nll_b.sum(1) / counts.sum()))
        return real(nll_a, nll_b, counts, *args)

    monkeypatch.setattr(stats, "seed_paired_interval", spy)
    runs = ["tb_s0", "tb_s1", "tf_s0", "tf_s1"]
    ev = mc.evaluate(runs, trained_dir=seed_runs)["ntp_loss"]
    tables = [mc.compare(runs, "a", {"a": a, "b": b}, seed_runs, paired=True)
              for a, b in ((["tb_s0", "tb_s1"], ["tf_s0", "tf_s1"]), (["tb_s1", "tb_s0"], ["tf_s0", "tf_s1"]))]
    for (per_a, per_b) in seen:
        assert per_a == pytest.approx(ev[["tb_s0", "tb_s1"]].to_numpy())
        assert per_b == pytest.approx(ev[["tf_s0", "tf_s1"]].to_numpy())
    assert len(seen) == 2
    first, second = (t.loc["b"] for t in tables)
    assert first["covers"] == "windows and seeds, paired"
    assert first[["lo_pct", "hi_pct"]].tolist() == second[["lo_pct", "hi_pct"]].tolist()
    assert "seed pairs, spread of the pairs' differences" in " ".join(tables[0].attrs["notes"])
    unpaired = mc.compare(runs, "a", {"a": ["tb_s0", "tb_s1"], "b": ["tf_s0", "tf_s1"]}, seed_runs)
    assert unpaired.loc["b", "d_pct"] == pytest.approx(first["d_pct"])
    assert unpaired.loc["b", "covers"] == "windows and seeds"
    with pytest.raises(ValueError, match=r"has seeds \[0, 1\] and the reference 'tb' \[0, 1, 2\]"):
        mc.compare(["tb_s0", "tb_s1", "tb_s2", "tf_s0", "tf_s1"], trained_dir=seed_runs, paired=True)
    with pytest.raises(ValueError, match=r"has seeds \[0, 1\] and the reference 'a' \[0\]"):
        mc.compare(runs, "a", {"a": ["copy_a", "copy_b"], "b": ["tf_s0", "tf_s1"]}, seed_runs, paired=True)
    r = run_cli(*runs, "--group=a=tb_s1,tb_s0", "--group=b=tf_s0,tf_s1", "--reference=a", "--paired",
                f"--trained_dir={seed_runs}", "--num_sequences=0", f"--out={tmp_path / 'c.png'}")
    assert r.returncode == 0, r.stderr
    assert "windows and seeds, paired" in r.stdout and "2 seed pairs" in r.stdout
    r = run_cli("tb_s0", "tb_s1", "tb_s2", "tf_s0", "tf_s1", "--paired", f"--trained_dir={seed_runs}",
                "--num_sequences=0", f"--out={tmp_path / 'c.png'}")
    assert r.returncode == 2 and "pairing needs the same seeds" in r.stderr


@pytest.mark.slow
def test_compare_counts_runs_of_one_seed_once(seed_runs):
    """Runs trained with one seed are not independent draws: a group holding tb_s0 twice over (copy_a is
    another run of seed 0) has the seeds tb_s0/copy_a, tb_s1, tb_s2, each seed's runs averaged window by
    window, and a note says so; without the copy there is no such note."""
    tb = ["tb_s0", "tb_s1", "tb_s2"]
    ev = mc.evaluate([*tb, "copy_a", "tf_s0", "tf_s1"], trained_dir=seed_runs)["ntp_loss"]
    table = mc.compare(["tf_s0", "tf_s1", "copy_a", *tb], "tf", {"tf": ["tf_s0", "tf_s1"], "x": ["copy_a", *tb]},
                       seed_runs)
    row = table.loc["x"]
    assert row["runs"] == 3
    per_seed = np.array([(ev["tb_s0"] + ev["copy_a"]) / 2, ev["tb_s1"], ev["tb_s2"]])
    assert row["ntp_loss"] == pytest.approx(per_seed.mean())
    assert row["seed_sd_pct"] == pytest.approx(100 * per_seed.std(ddof=1) / per_seed.mean(), rel=1e-6)
    notes = " ".join(table.attrs["notes"])
    assert "the runs in (copy_a, tb_s0) share a seed" in notes and "3 seeds, not 4 runs" in notes
    assert "3 seed(s) against 2" in notes  # the sizing counts seeds too
    plain = mc.compare(["tf_s0", "tf_s1", *tb], "tf", {"tf": ["tf_s0", "tf_s1"], "x": tb}, seed_runs)
    assert "share a seed" not in " ".join(plain.attrs["notes"])


@pytest.mark.slow
def test_compare_refuses_runs_scored_on_different_windows(seed_runs):
    """copy_official is the tiny baseline recorded as validated on the official text; copy_a on the sample's
    held-out stories: window by window they cannot be paired, unless both are scored on one text."""
    with pytest.raises(ValueError, match="same windows"):
        mc.compare(["copy_a", "copy_official"], trained_dir=seed_runs)
    table = mc.compare(["copy_a", "copy_official"], trained_dir=seed_runs, val_data_path=tools.VALID_SAMPLE_PATH)
    assert table.loc["copy_official", "d_ntp"] == 0.0  # the same weights on the same windows


def test_window_scores_are_cached_in_the_run_folder(seed_runs, monkeypatch):
    first = mc.evaluate(["tb_s0"], trained_dir=seed_runs)
    cached = os.listdir(os.path.join(seed_runs, "tb_s0", "scores"))
    assert len(cached) >= 1 and all(f.endswith(".npz") for f in cached)
    monkeypatch.setattr(scoring, "score_windows",
                        lambda *a, **k: pytest.fail("scored again instead of reading the cache"))
    again = mc.evaluate(["tb_s0"], trained_dir=seed_runs)
    pd.testing.assert_frame_equal(first, again)


def test_plot_groups_as_mean_and_band_and_flops_axis(seed_runs, tmp_path):
    fig = mc.plot_curves(["tb_s0", "tb_s1", "tb_s2", "copy_a"], metrics="val_ntp_loss", trained_dir=seed_runs)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
    assert labels == ["tb (mean of 3)", "copy_a"]
    assert len(ax.collections) == 1  # one band, for the group
    logs = [tools.read_log(f"tb_s{s}", seed_runs) for s in range(3)]
    mean = sum(log["val_ntp_loss"] for log in logs) / 3
    line = next(line for line in ax.get_lines() if line.get_label() == "tb (mean of 3)")
    assert np.allclose(line.get_ydata(), mean)
    mc.plt.close(fig)
    fig = mc.plot_curves(["tb_s0", "tb_s1"], metrics="val_ntp_loss", trained_dir=seed_runs, group_seeds=False,
                         x="flops")
    assert len([line for line in fig.axes[0].get_lines() if line.get_linestyle() == "-"]) == 2
    mc.plt.close(fig)
    # a log written before the flops column existed: the axis is computed from the config
    log = tools.read_log("copy_b", seed_runs)
    log.drop(columns=["flops"]).to_csv(os.path.join(seed_runs, "copy_b", "log_data.csv"), index=False)
    fig = mc.plot_curves(["copy_b"], metrics="val_ntp_loss", trained_dir=seed_runs, x="flops")
    assert np.allclose(fig.axes[0].get_lines()[0].get_xdata(), log["flops"])
    mc.plt.close(fig)


def test_plot_passes_axis(seed_runs, tmp_path):
    """x="passes": training tokens over the tokens of the run's training split, as recorded at training; a run
    trained before train_tokens was recorded has its training data counted again, and one whose data is gone is
    refused with its name."""
    train_tokens = tools.load_configs("tb_s0", seed_runs)[1].train_tokens
    assert train_tokens > 0
    fig = mc.plot_curves(["tb_s0"], metrics="val_ntp_loss", trained_dir=seed_runs, x="passes")
    log = tools.read_log("tb_s0", seed_runs)
    assert np.allclose(fig.axes[0].get_lines()[0].get_xdata(), log["tokens"] / train_tokens)
    assert fig.axes[0].get_xlabel() == "passes over the training split"
    mc.plt.close(fig)
    root = tmp_path / "trained"
    shutil.copytree(os.path.join(seed_runs, "tb_s0"), root / "old")
    cfg_path = root / "old" / "train_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(model_name="old", train_tokens=None, passes=None)
    cfg_path.write_text(json.dumps(cfg))
    fig = mc.plot_curves(["old"], metrics="val_ntp_loss", trained_dir=str(root), x="passes")
    assert np.allclose(fig.axes[0].get_lines()[0].get_xdata(), log["tokens"] / train_tokens)
    mc.plt.close(fig)
    cfg_path.write_text(json.dumps({**cfg, "data_path": str(tmp_path / "gone.txt")}))
    with pytest.raises(ValueError, match="run 'old' predates the recorded train_tokens.*gone.txt"):
        mc.plot_curves(["old"], metrics="val_ntp_loss", trained_dir=str(root), x="passes")


def test_plot_by_passes(seed_runs, tmp_path):
    """A comparison's row is drawn at the mean passes of its group's runs (one series: not dodged), at its
    difference with its interval; a reference row or a label the table lacks is refused."""
    table = mc.compare(["tb_s0", "tb_s1", "tb_s2", "tf_s0", "tf_s1"], "tb", trained_dir=seed_runs)
    passes = [tools.read_log(f"tf_s{s}", seed_runs)["tokens"].iloc[-1]
              / tools.load_configs(f"tf_s{s}", seed_runs)[1].train_tokens for s in (0, 1)]
    fig = mc.plot_by_passes({"tf": [(table, "tf")]}, trained_dir=seed_runs, path=str(tmp_path / "p.png"))
    ax = fig.axes[0]
    bar, point = ax.get_lines()[0], next(line for line in ax.get_lines() if line.get_label() == "tf")
    assert np.allclose(point.get_xdata(), [np.mean(passes)])
    assert np.allclose(point.get_ydata(), table.loc["tf", "d_pct"])
    assert np.allclose(bar.get_ydata(), table.loc["tf", ["lo_pct", "hi_pct"]].astype(float))
    assert ax.get_xscale() == "log" and (tmp_path / "p.png").is_file()
    mc.plt.close(fig)
    with pytest.raises(ValueError, match="'tb' is its table's reference"):
        mc.plot_by_passes({"x": [(table, "tb")]}, trained_dir=seed_runs)
    with pytest.raises(ValueError, match="'nope' is not a row of the table"):
        mc.plot_by_passes({"x": [(table, "nope")]}, trained_dir=seed_runs)


@pytest.mark.slow
def test_cli_reference_and_groups(seed_runs, tmp_path):
    png = tmp_path / "cmp.png"
    r = run_cli("tb_s0", "tb_s1", "tb_s2", "copy_a", "copy_b", f"--trained_dir={seed_runs}", f"--out={png}",
                "--reference=copy_a", "--group=copies=copy_a,copy_b", "--num_sequences=0", "--x=flops",
                f"--compare_out={tmp_path / 'intervals.png'}")
    assert r.returncode == 0, r.stderr
    assert "paired comparison" in r.stdout and "vs copies" in r.stdout and "windows and seeds" in r.stdout
    assert "copies = copy_a, copy_b" in r.stdout and png_ok(png) and png_ok(tmp_path / "intervals.png")
    r = run_cli("copy_a", f"--trained_dir={seed_runs}", f"--out={png}", "--group=bad")
    assert r.returncode == 2 and "--group=LABEL=RUN,RUN" in r.stderr


# ---------------------------------------------------------------- readable by default


@pytest.mark.slow
def test_readable_defaults(seed_runs, tmp_path):
    import shutil
    import time

    # default_names: the README's main runs when present, then the run whose recorded start is the latest (file
    # times say the opposite here, as in a fresh clone where they mean nothing; a run that recorded none is not taken)
    root = tmp_path / "trained"
    root.mkdir()
    for i, (name, started) in enumerate([("old", "2026-01-01T00:00:00Z"), ("futureformer", None),
                                         ("newest", "2026-03-01T00:00:00Z"), ("baseline", None),
                                         ("newer", "2026-02-01T00:00:00Z"), ("unrecorded", None)]):
        shutil.copytree(os.path.join(seed_runs, "copy_a"), root / name, ignore=shutil.ignore_patterns("scores"))
        cfg = json.loads((root / name / "train_config.json").read_text())
        (root / name / "train_config.json").write_text(json.dumps({**cfg, "model_name": name, "started": started}))
        os.utime(root / name / "model.pth", (time.time() + i, time.time() + i))
    assert mc.default_names(str(root)) == ["baseline", "futureformer", "newest"]
    # one legend for the figure, outside the axes, however many runs
    fig = mc.plot_curves(["tb_s0", "copy_a", "copy_b"], metrics=("val_ntp_loss", "val_bpb"), trained_dir=seed_runs)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["tb", "copy_a", "copy_b"]  # tb_s0, of group tb
    mc.plt.close(fig)
    # the CLI's table fits a terminal by default; --columns=all shows everything
    r = run_cli("copy_a", "tb_s0", f"--trained_dir={seed_runs}", f"--out={tmp_path / 'c.png'}", "--no_compare")
    assert r.returncode == 0, r.stderr
    table = r.stdout.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) <= 120 and "eval_bpb" in table[0] and "wall_s" not in table[0]
    r = run_cli("copy_a", f"--trained_dir={seed_runs}", f"--out={tmp_path / 'c.png'}", "--columns=all")
    assert r.returncode == 0 and "wall_s" in r.stdout and "fs_periods" in r.stdout


@pytest.mark.slow
def test_a_run_committed_without_weights_compares_from_its_scores(seed_runs, tmp_path):
    import shutil

    root = tmp_path / "trained"
    for name in ("tb_s0", "tb_s1"):
        shutil.copytree(os.path.join(seed_runs, name), root / name, ignore=shutil.ignore_patterns("scores"))
    apart = {"a": ["tb_s0"], "b": ["tb_s1"]}  # the two seeds as runs of their own, not one group
    first = mc.compare(["tb_s0", "tb_s1"], groups=apart, trained_dir=str(root))
    os.remove(root / "tb_s1" / "model.pth")  # as a research run is committed: configs, log, scores
    again = mc.compare(["tb_s0", "tb_s1"], groups=apart, trained_dir=str(root))
    pd.testing.assert_frame_equal(first, again)
    table = mc.summary_table(["tb_s0", "tb_s1"], trained_dir=str(root))
    assert table.loc["tb_s1", "params"] == table.loc["tb_s0", "params"] and table["eval_bpb"].notna().all()
    with pytest.raises(FileNotFoundError, match="tb_s1 has no model.pth and no scores for these windows"):
        mc.compare(["tb_s0", "tb_s1"], groups=apart, trained_dir=str(root), val_data_path=tools.VALID_SAMPLE_PATH)
    # another run's weights put in its place are refused (its fingerprint records the weights it saved); replaced
    # on purpose (the fingerprint removed, as the message says), they are scored afresh
    shutil.copy(os.path.join(seed_runs, "tb_s2", "model.pth"), root / "tb_s1" / "model.pth")
    with pytest.raises(ValueError, match="is not the file that was saved with this run"):
        mc.evaluate(["tb_s1"], trained_dir=str(root))
    os.remove(root / "tb_s1" / FINGERPRINT)
    fresh = mc.evaluate(["tb_s1"], trained_dir=str(root))
    assert fresh.loc["tb_s1", "ntp_loss"] != first.loc["b", "ntp_loss"]
    assert fresh.loc["tb_s1", "ntp_loss"] == pytest.approx(mc.evaluate(["tb_s2"], trained_dir=seed_runs).loc[
        "tb_s2", "ntp_loss"])


def test_verdict_says_when_it_leaves_seed_noise_out():
    """A resolved difference between two single runs is marked "(windows only)"; with seeds in the interval it is
    plain better / worse; an interval holding 0 is "not resolved" either way."""
    seeds, windows = "windows and seeds", "windows only"
    assert compare._verdict({"lo": -0.3, "hi": -0.1, "covers": seeds}) == "better"
    assert compare._verdict({"lo": 0.1, "hi": 0.3, "covers": seeds}) == "worse"
    assert compare._verdict({"lo": -0.3, "hi": -0.1, "covers": windows}) == "better (windows only)"
    assert compare._verdict({"lo": 0.1, "hi": 0.3, "covers": windows}) == "worse (windows only)"
    for covers in (seeds, windows):
        assert compare._verdict({"lo": -0.1, "hi": 0.1, "covers": covers}) == "not resolved"
        assert compare._verdict({"lo": 0.0, "hi": 0.2, "covers": covers}) == "not resolved"


# ---------------------------------------------------------------- along training


@pytest.mark.slow
def test_checkpoint_scores_follow_training_on_the_whole_split(tmp_path, data_cache_dir):
    """A run trained with checkpoints and a moving average gives, per checkpoint, its last and its averaged
    weights scored on every validation window, and its final weights as the last row; a run without checkpoints
    is refused with what to do."""
    from conftest import tiny_configs

    from train import train

    mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=0, model_name="te", max_iters=15, eval_interval=5,
                              checkpoint_interval=5, ema_decay=0.9, ema_save_last=True)
    train(mcfg, tcfg, trained_dir=str(tmp_path), progress=False)
    table = mc.checkpoint_scores("te", str(tmp_path))
    assert list(zip(table["weights"], table["step"])) == [("average", 5), ("average", 10), ("average", 15),
                                                          ("last", 5), ("last", 10)]
    ev = mc.evaluate(["te", "te_last"], trained_dir=str(tmp_path))
    final = table[(table["step"] == 15)].iloc[0]
    assert final["bpb"] == pytest.approx(ev.loc["te", "bpb"], rel=1e-6)  # model.pth, scored the same way
    last = table[table["weights"] == "last"].set_index("step")["ntp_loss"]
    avg = table[table["weights"] == "average"].set_index("step")["ntp_loss"]
    assert last[10] < last[5], "training from random weights should lower the loss from step 5 to 10"
    assert avg[5] != last[5] and avg[10] != last[10]  # two models per checkpoint, not one scored twice
    with pytest.raises(ValueError, match="--checkpoint_interval"):
        mc.checkpoint_scores("te_last", str(tmp_path))
    png = tmp_path / "ckpt.png"
    r = run_cli("te", "--checkpoints", f"--trained_dir={tmp_path}", f"--out={png}", "--markdown")
    assert r.returncode == 0, r.stderr
    assert "| run | step | weights | ntp_loss | bpb |" in r.stdout and "| te | 10 | last |" in r.stdout and png_ok(png)
    r = run_cli("te_last", "--checkpoints", f"--trained_dir={tmp_path}", f"--out={png}")
    assert r.returncode == 2 and "no checkpoints to score" in r.stderr


# ---------------------------------------------------------------- one validation text


def test_a_run_records_its_start_and_the_text_it_validated_on(tiny_runs):
    """The fingerprint recorded while training is the one a run that predates the field gets from its files."""
    import data

    tcfg = tiny_runs["tiny_base"].train_cfg
    assert tcfg.val_text.startswith("the held-out 5% of tinystories_sample.txt #") and "#?" not in tcfg.val_text
    assert data.read_validation_text(tcfg) == tcfg.val_text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", tcfg.started)
    official = mc.load_configs("tiny_base", tiny_runs["trained_dir"])[1]
    assert data.read_validation_text(replace(official, val_data_path=tools.VALID_SAMPLE_PATH)).startswith(
        "tinystories_valid_sample.txt #")


@pytest.mark.slow
def test_curves_and_tables_never_mix_validation_texts(seed_runs):
    """copy_a validated on the sample's held-out stories, copy_official on the official excerpt (same weights)."""
    texts = {n: mc.validation_text_of(n, seed_runs) for n in ("copy_a", "copy_b", "copy_official")}
    assert texts["copy_a"] == texts["copy_b"] != texts["copy_official"]
    fig = mc.plot_curves(["copy_a", "copy_official"], metrics=("val_bpb", "lr"), trained_dir=seed_runs)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 3 and titles[2] == "lr"  # one val_bpb panel per text, then lr for both
    for ax, name in zip(fig.axes[:2], ("copy_a", "copy_official")):
        assert ax.get_title() == f"val_bpb\nvalidated on {texts[name]}"
        assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == [name]
    mc.plt.close(fig)
    mixed = mc.summary_table(["copy_a", "copy_official"], seed_runs, num_sequences=8)
    assert "val_bpb" not in mixed.columns and mixed.attrs["eval_text"] == "tinystories_valid_sample.txt"
    own = mixed[f"val_bpb on {texts['copy_a']}"]
    assert not pd.isna(own["copy_a"]) and pd.isna(own["copy_official"])
    assert mixed["eval_bpb"]["copy_a"] == pytest.approx(mixed["eval_bpb"]["copy_official"])  # one text, same weights
    same = mc.summary_table(["copy_a", "copy_b"], seed_runs, num_sequences=8)
    assert "val_bpb" in same.columns and same.attrs["eval_text"] == texts["copy_a"]


def test_interval_plot_names_its_reference_and_captions_only_what_it_draws():
    rows = [{"runs": 1, "verdict": "reference", "covers": "", "d_pct": 0.0, "lo_pct": 0.0, "hi_pct": 0.0},
            {"runs": 1, "verdict": "not resolved", "covers": "windows only", "d_pct": 0.5, "lo_pct": -0.2,
             "hi_pct": 1.2}]
    table = pd.DataFrame(rows, index=["base", "ff"])
    table.attrs["reference"] = "base"
    fig = mc.plot_comparison(table)
    title = fig.axes[0].get_title()
    assert "against base" in title and "windows only" in title and "seeds" not in title.replace("seed noise", "")
    mc.plt.close(fig)
    table.loc["ff", "covers"], table.attrs["reference"] = "windows and seeds", "base"
    title = mc.plot_comparison(table).axes[0].get_title()
    assert "over windows and seeds" in title and "thin" not in title

