"""Shared fixtures: tiny runs really trained by train.train() on the TinyStories sample, in a temporary
trained/ folder (never the repository's), for the tests of training, loading, generation and comparison."""

import os
import signal

import pytest

import tools
from config import ModelConfig, TrainConfig

HAVE_SAMPLE = os.path.isfile(tools.SAMPLE_PATH)
needs_sample = pytest.mark.skipif(not HAVE_SAMPLE, reason=f"no TinyStories sample at {tools.SAMPLE_PATH}")

# Small enough to train in a couple of seconds on 2 CPU cores, real enough to learn something.
TINY_MODEL = dict(dim=32, num_layers=4, num_q_heads=2, num_kv_heads=1, max_seq_len=64, dropout_rate=0.0,
                  tokenizer="bpe_v2", vocab_len=1024)
TINY_TRAIN = dict(batch_size=8, max_iters=40, eval_interval=10, eval_samples=2, lr_max=1e-2)


def tiny_configs(cache_dir, fs_periods=2, **overrides):
    """(ModelConfig, TrainConfig) of a tiny run on the sample; `overrides` go to whichever config has the field."""
    m = {**TINY_MODEL, "fs_periods": fs_periods}
    t = {**TINY_TRAIN, "data_path": tools.SAMPLE_PATH, "data_cache_dir": str(cache_dir)}
    for key, value in overrides.items():
        (m if key in ModelConfig.__dataclass_fields__ else t)[key] = value
    return ModelConfig(**m), TrainConfig(**t)


@pytest.fixture
def default_stop_signals():
    """Ctrl-C, SIGTERM and SIGHUP as a terminal gives them, for the tests that check that train() puts them back: a
    suite started in the background (`cmd &` in a script, `nohup`) inherits SIGINT and SIGHUP ignored."""
    wanted = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL, signal.SIGHUP: signal.SIG_DFL}
    before = {sig: signal.signal(sig, handler) for sig, handler in wanted.items()}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.fixture(scope="session")
def data_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data_cache")


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, data_cache_dir):
    """{"tiny_ff": Run, "tiny_base": Run}: a FutureFormer (fs_periods=2) and a baseline, trained 40 steps
    and saved in a temporary trained/ folder, `tiny_runs["trained_dir"]`."""
    if not HAVE_SAMPLE:
        pytest.skip(f"no TinyStories sample at {tools.SAMPLE_PATH}")
    from train import train

    trained_dir = str(tmp_path_factory.mktemp("trained"))
    runs = {"trained_dir": trained_dir}
    for name, fs_periods in (("tiny_ff", 2), ("tiny_base", 0)):
        mcfg, tcfg = tiny_configs(data_cache_dir, fs_periods=fs_periods, model_name=name)
        runs[name] = train(mcfg, tcfg, trained_dir=trained_dir, progress=False)
    return runs


# ---------------------------------------------------------------- the fast lane: pytest -m "not slow"

# Besides the tests marked @pytest.mark.slow one by one: every test of these files (they run notebooks, the README's
# commands, the benchmarks, real training), and every test that reads a trained run from one of these fixtures.
SLOW_MODULES = {"test_notebooks", "test_readme", "test_benchmarks", "test_learning"}
SLOW_FIXTURES = {"tiny_runs", "runs", "seed_runs", "run_copy", "tiny_export", "baseline_export"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__ in SLOW_MODULES or SLOW_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.slow)


# ---------------------------------------------------------------- CI: no data test may be skipped

_DATA_SKIPS = []


def pytest_runtest_logreport(report):
    """Remember the tests skipped for want of ../shared/data (their reasons name TinyStories)."""
    if report.skipped and isinstance(report.longrepr, tuple) and "TinyStories" in str(report.longrepr[2]):
        _DATA_SKIPS.append(report.nodeid)


def _runs_in_repo() -> set:
    return set(os.listdir(tools.TRAINED_DIR)) if os.path.isdir(tools.TRAINED_DIR) else set()


_RUNS_BEFORE = _runs_in_repo()


def pytest_sessionfinish(session, exitstatus):
    """Under CI (CI=true): a test skipped because ../shared/data is missing fails the run (a green CI must have run
    the tests that read the data), and so does a test that left a folder in the repository's trained/ (tests train
    into temporary folders only). Elsewhere, where a research run may be training into trained/, neither."""
    if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    if _DATA_SKIPS:
        print(f"\nCI: {len(_DATA_SKIPS)} test(s) skipped because ../shared/data is missing, e.g. {_DATA_SKIPS[0]}; "
              "CI must run them: lay out ../shared/data beside the repository")
        session.exitstatus = 1
    left = sorted(_runs_in_repo() - _RUNS_BEFORE - {"model_comparison.png"})
    if left:
        print(f"\nCI: tests left {', '.join(left)} in the repository's trained/: train into tmp_path")
        session.exitstatus = 1
