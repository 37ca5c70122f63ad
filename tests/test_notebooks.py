"""The notebooks execute end to end (with small parameters) and none is committed with an error output."""

import glob
import json
import os

import pytest

import tools
from tools import REPO_DIR

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_DIR, "**", "*.ipynb"), recursive=True))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.relpath(p, REPO_DIR) for p in NOTEBOOKS])
def test_committed_notebook_has_no_error_output(path):
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"cell {i}: {out.get('ename')}: {out.get('evalue')}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.relpath(p, REPO_DIR) for p in NOTEBOOKS])
def test_committed_notebook_outputs_stay_readable(path):
    """No cell dumps a tensor's values, and no progress bar is saved as a widget (which shows a stale "0/N")."""
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", [])) + "".join(out.get("data", {}).get("text/plain", []))
            assert "tensor([[" not in text, f"cell {i} prints a tensor's values: show its shape instead"
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {}), f"cell {i}: a widget"


def test_testing_modules_notebook_runs(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "out.ipynb"
    for fs_periods in (0, 2):
        papermill.execute_notebook(os.path.join(REPO_DIR, "testing_modules.ipynb"), str(out), cwd=REPO_DIR,
                                   parameters={"dim": 16, "fs_periods": fs_periods, "seq_len": 6},
                                   progress_bar=False, kernel_name="python3")
        text = out.read_text()
        assert "Model.forward" in text and "SelfAttention.forward" in text and "Pooler.forward" in text
        assert ("CrossAttention.forward" in text) == (fs_periods > 0)
        assert "cached == full: True" in text
        assert "cached last-position logits == full forward: True" in text


TINY_NOTEBOOK_RUN = {"dim": 16, "num_layers": 3, "num_q_heads": 2, "max_seq_len": 32, "fs_periods": 1}


@pytest.mark.skipif(not os.path.isfile(tools.SAMPLE_PATH), reason=f"no TinyStories sample at {tools.SAMPLE_PATH}")
def test_train_notebook_trains_and_saves(tmp_path):
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "train.out.ipynb"
    papermill.execute_notebook(
        os.path.join(REPO_DIR, "train.ipynb"), str(out), cwd=REPO_DIR, progress_bar=False, kernel_name="python3",
        parameters={"data_path": tools.SAMPLE_PATH, "trained_dir": str(tmp_path / "trained"),
                    "model_overrides": TINY_NOTEBOOK_RUN,
                    "train_overrides": {"max_iters": 6, "eval_interval": 3, "batch_size": 4, "eval_samples": 1,
                                        "data_cache_dir": str(tmp_path / "cache"), "model_name": "nb"}})
    text = out.read_text()
    assert "val_ntp_loss" in text and "Once upon a time" in text
    assert "application/vnd.jupyter.widget-view+json" not in text  # a text bar, saved in its final state
    assert "6/6" in text
    assert tools.list_runs(str(tmp_path / "trained")) == ["nb"]
