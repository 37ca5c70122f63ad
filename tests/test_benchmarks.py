"""The benchmarks run (with tiny settings) and print their ratios: they are documented commands, so they must
not rot. Their figures are not checked here: speed is judged from the benchmarks' own output."""

import os
import subprocess
import sys

import pytest

import tools
from tools import REPO_DIR, SAMPLE_PATH

TINY = ["--dim=32", "--num_layers=3", "--max_seq_len=32", "--fs_periods=2"]


def bench(script, *args):
    out = subprocess.run([sys.executable, os.path.join(REPO_DIR, "benchmarks", script), *args], cwd=REPO_DIR,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_train_speed_benchmark_runs():
    text = bench("train_speed.py", "--steps=2", "--batch_size=2", *TINY)
    assert "FutureFormer / baseline step time" in text and "fp32 matmul peak measured in this run" in text
    assert text.count("of the peak") == 4  # the baseline and the three default settings


def test_generate_speed_benchmark_runs():
    text = bench("generate_speed.py", "--tokens=40", "--repeats=1", *TINY)
    assert text.count("same text: True") == 2  # cached == compiled == uncached, past max_seq_len
    assert text.count("compiled cached") == 2 and tools.machine_name("cpu") in text


def test_precision_speed_benchmark_runs():
    text = bench("precision_speed.py", "--steps=1", "--batch_size=2", *TINY)
    assert "precision='auto' on this CPU:" in text and "of the bf16 peak" in text
    assert text.count("as many tokens/s as eager fp32") == 2 and "FutureFormer / baseline step time" in text


@pytest.mark.skipif(not os.path.isfile(SAMPLE_PATH), reason=f"no TinyStories sample at {SAMPLE_PATH}")
def test_train_loop_speed_benchmark_runs(tmp_path):
    text = bench("train_loop_speed.py", "--steps=2", "--rounds=1", "--batch_size=2", *TINY[:-1],
                 f"--data_cache_dir={tmp_path}")
    assert "train() / minimal+GPT" in text


def test_benchmarks_reject_unknown_options():
    out = subprocess.run([sys.executable, os.path.join(REPO_DIR, "benchmarks", "generate_speed.py"), "--token=5"],
                         cwd=REPO_DIR, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "did you mean --tokens" in out.stderr


@pytest.mark.skipif(not os.path.isfile(SAMPLE_PATH), reason=f"no TinyStories sample at {SAMPLE_PATH}")
def test_data_speed_benchmark_runs():
    assert "identical ids: True" in bench("data_speed.py", "--rounds=1")


@pytest.mark.skipif(not os.path.isfile(SAMPLE_PATH), reason=f"no TinyStories sample at {SAMPLE_PATH}")
def test_gpu_check_runs_its_tiny_version_on_a_cpu():
    text = bench("gpu_check.py", "--tiny", "--steps=8", "--device=cpu")
    assert "self-attention kernel available to SDPA" in text and "bf16 training:" in text
    assert "within the 2% tolerance" in text
