"""The notebooks execute end to end (with small parameters) and none is committed with an error output."""

import glob
import json
import os

import pytest

from tools import REPO_DIR

NOTEBOOKS = sorted(glob.glob(os.path.join(REPO_DIR, "**", "*.ipynb"), recursive=True))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.relpath(p, REPO_DIR) for p in NOTEBOOKS])
def test_committed_notebook_has_no_error_output(path):
    with open(path, encoding="utf-8") as f:
        nb = json.load(f)
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", f"cell {i}: {out.get('ename')}: {out.get('evalue')}"


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
