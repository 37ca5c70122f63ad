"""The committed runs in trained/ can be trusted: each one loads, its configs round-trip, its validation
bits per byte recomputed from the saved weights on the held-out sample stories matches what its
log_data.csv reports, the logged figures of trained/results.json are the logs' numbers, and every interval table
there is what model_comparison.compare computes on the official validation text. The figures live in that data file,
not in prose: the pages that show a table (README.md, trained/README.md, experiments/) are checked to hold the very
same table, wherever it stands on the page."""

import dataclasses
import json
import os

import pytest
import results_tables
from conftest import needs_sample

import tools
from config import ModelConfig, TrainConfig, from_dict, replace, to_dict

RESULTS = results_tables.load()


def _committed_runs() -> list[str]:
    """The runs trained/results.json lists as committed (shown in trained/README.md): the suite checks these, never
    whatever else a user has trained into trained/."""
    runs = [row[0] for row in RESULTS["committed_runs"]["rows"]]
    assert runs, "trained/results.json lists no committed runs"
    return runs


RUNS = _committed_runs()


def _results_rows() -> dict:
    """{run name: {column: cell}} from every logged table of trained/results.json with a val_bpb column (the first
    cell of a row is the run's name)."""
    rows = {}
    for table in RESULTS["logged"]:
        head = table["columns"]
        if "val_bpb" in head:
            rows.update({cells[0]: dict(zip(head, cells)) for cells in table["rows"]})
    return rows


def test_runs_are_committed():
    assert len(RUNS) >= 6, f"trained/results.json should list the six compared runs, lists {RUNS}"
    assert set(RUNS) <= set(tools.list_runs()), f"listed but not in trained/: {set(RUNS) - set(tools.list_runs())}"
    for name in RUNS:
        files = set(os.listdir(tools.run_path(name)))
        assert set(tools.RUN_FILES) <= files, f"{name}: missing {set(tools.RUN_FILES) - files}"


@pytest.mark.parametrize("name", RUNS)
def test_configs_round_trip(name):
    path = tools.run_path(name)
    mcfg, tcfg = tools.load_configs(name)
    for fname, cfg, cls in (("model_config.json", mcfg, ModelConfig), ("train_config.json", tcfg, TrainConfig)):
        with open(os.path.join(path, fname)) as f:
            saved = json.load(f)
        now = to_dict(cfg)
        if "bf16" in saved:  # saved before `precision`: bf16=true was bf16 autocast on CUDA only, precision None
            assert now["precision"] == (None if saved.pop("bf16") else "fp32")
        assert {k: now[k] for k in saved} == saved, f"{name}/{fname} does not round-trip"
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        assert all(now[k] == defaults[k] for k in now if k not in saved)  # fields added since: their defaults
        assert from_dict(cls, to_dict(cfg)) == cfg
    assert tcfg.model_name == name


@pytest.mark.parametrize("name", RUNS)
def test_the_committed_runs_say_what_they_validated_on(name):
    """trained/README.md's "validated on" column is what runs.validation_text_of reads from the run's files."""
    import runs

    row = next(r for r in RESULTS["committed_runs"]["rows"] if r[0] == name)
    assert row[RESULTS["committed_runs"]["columns"].index("validated on")] == runs.validation_text_of(name)


@pytest.mark.slow
@needs_sample
@pytest.mark.parametrize("name", RUNS)
def test_validation_bpb_matches_the_log(name, data_cache_dir):
    from scoring import evaluate_split

    model, tok, mcfg = tools.load_model(name)  # strict load: every weight present, none extra
    _, tcfg = tools.load_configs(name)
    assert model.num_params() > 500_000 and tok.vocab_len == mcfg.vocab_len
    data = tools.get_data(mcfg, replace(tcfg, data_cache_dir=str(data_cache_dir)))
    parts = evaluate_split(model, data, "val", mcfg, batch_size=16, device="cpu")
    bpb = tools.bits_per_byte(parts["ntp_loss"], data.meta["val"]["bytes_per_token"])
    log = tools.read_log(name)
    last = log.iloc[-1]
    assert last["full_val"] == 1 and last["step"] == tcfg.max_iters
    assert bpb == pytest.approx(last["val_bpb"], rel=0.02)
    assert 0.8 < bpb < 1.6  # a trained model, not a fresh one (about 3 bpb)


def test_logged_results_table_is_the_logs():
    rows = _results_rows()
    assert set(rows) <= set(RUNS), f"logged tables name runs not committed: {set(rows) - set(RUNS)}"
    assert len(rows) >= 6
    for name, row in rows.items():
        last = tools.read_log(name).iloc[-1]
        assert row["val_bpb"] == f"{last['val_bpb']:.4f}", name
        assert row["val_ntp_loss"] == f"{last['val_ntp_loss']:.4f}", name
        assert row["tokens"] == f"{int(last['tokens']):,}", name


@pytest.mark.slow
def test_inference_notebook_runs_as_committed(tmp_path):
    """inference.ipynb opens on a committed run, so it runs the first time, with nothing to edit."""
    papermill = pytest.importorskip("papermill")
    out = tmp_path / "inference.out.ipynb"
    papermill.execute_notebook(os.path.join(tools.REPO_DIR, "inference.ipynb"), str(out), cwd=tools.REPO_DIR,
                               parameters={"max_gen_len": 8}, progress_bar=False, kernel_name="python3")
    text = out.read_text()
    assert "Once upon a time" in text and "t+2..t+3:" in text


def _members(label: str, groups: dict) -> list[str]:
    """The runs a table row stands for: a group the table's command names (--group), a run, or the seeds recorded
    as group `label`."""
    if label in groups:
        return groups[label]
    if os.path.isfile(os.path.join(tools.TRAINED_DIR, label, "train_config.json")):
        return [label]
    runs = sorted(d for d in os.listdir(tools.TRAINED_DIR)
                  if os.path.isfile(os.path.join(tools.TRAINED_DIR, d, "train_config.json"))
                  and tools.load_configs(d)[1].group == label)
    assert runs, f"{label!r} is neither a run in trained/ nor the group of any"
    return runs


def _percent(cell: str) -> float:
    return float(cell.replace("%", "").replace("−", "-"))


@pytest.mark.slow
@needs_sample
def test_interval_tables_are_what_compare_computes(tmp_path):
    """Every interval table of trained/results.json (the README's main comparison among them) is what
    model_comparison.compare computes from the committed weights on the official validation text. The runs are
    copied to a temporary trained/ so that the scores' cache is not written into the repository."""
    import shutil

    import model_comparison as mc

    tables = [t for t in RESULTS["intervals"] if "95% interval" in t["columns"]]
    assert len(tables) >= 5
    for t in tables:
        head, body = t["columns"], t["rows"]
        labels = [cells[0] for cells in body]
        names = [n for label in labels for n in _members(label, t["groups"])]
        for name in names:
            if not os.path.isdir(tmp_path / name):
                # the committed runs are scored afresh from their weights; research runs are committed with their
                # per-window scores instead of their weights, and compared from those
                ignore = shutil.ignore_patterns("scores") if name in RUNS else None
                shutil.copytree(tools.run_path(name), tmp_path / name, ignore=ignore)
        reference = next(cells[0] for cells in body if "reference" in cells)
        groups = {label: t["groups"][label] for label in labels if label in t["groups"]}
        table = mc.compare(names, reference=reference, groups=groups, trained_dir=str(tmp_path),
                           val_data_path=tools.VALID_SAMPLE_PATH)
        col = {name: head.index(name) for name in head}
        for cells in body:
            label = cells[0]
            row = table.loc[label]
            assert cells[col["runs"]] == str(int(row["runs"])), label
            assert float(cells[col["bpb"]]) == pytest.approx(row["bpb"], abs=1.5e-4), label
            assert cells[col["verdict"]] == row["verdict"], label
            if row["verdict"] == "reference":
                continue
            assert cells[col["covers"]] == row["covers"], label
            assert _percent(cells[col["Δ %"]]) == pytest.approx(row["d_pct"], abs=0.015), label
            lo, hi = (_percent(x) for x in cells[col["95% interval"]].split(" … "))
            assert lo == pytest.approx(row["lo_pct"], abs=0.05) and hi == pytest.approx(row["hi_pct"], abs=0.05), label


@pytest.mark.parametrize("table", results_tables.all_tables(RESULTS), ids=lambda t: t.get("name", "committed runs"))
def test_pages_show_the_data_files_tables(table):
    """Each page a table of trained/results.json names in "shown_in" holds that table, cell for cell (backticks
    aside), wherever it stands on the page: the docs show the figures the tests check. `python
    tests/results_tables.py` prints the tables as markdown."""
    expected = [table["columns"], *table["rows"]]
    assert table["shown_in"], "a table of trained/results.json shown on no page"
    for page in table["shown_in"]:
        path = os.path.join(tools.REPO_DIR, page)
        assert expected in results_tables.page_tables(path), (
            f"{page} does not show this table of trained/results.json as it is there:\n"
            f"{results_tables.markdown(table)}")


def test_data_file_tables_are_well_formed():
    for table in results_tables.all_tables(RESULTS):
        assert all(len(row) == len(table["columns"]) for row in table["rows"]), table.get("name")
        assert set(table.get("code", [])) <= set(table["columns"]), table.get("name")
