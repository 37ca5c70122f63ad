"""stats.py: the intervals a comparison rests on, tested on synthetic per-window losses with known answers."""

import math

import numpy as np
import pytest

import stats

W = 475  # windows, as many as the official validation excerpt gives at 256 tokens


def _windows(rng, n=W, tokens=256):
    """Per-window target counts and a per-window difficulty (mean loss per target), as real text has."""
    counts = np.full(n, float(tokens))
    counts[-1] = 97.0  # the last window of a split is partial
    return counts, rng.normal(2.8, 0.35, n)


def _run(difficulty, counts, rng, offset=0.0, noise=0.05):
    """Summed loss per window of a model: the text's difficulty, plus the model's own offset per target, plus
    window-level noise of its own."""
    return (difficulty + offset + rng.normal(0, noise, len(counts))) * counts


def test_paired_bootstrap_finds_a_known_difference():
    rng = np.random.default_rng(0)
    counts, diff = _windows(rng)
    a, b = _run(diff, counts, rng), _run(diff, counts, rng, offset=0.028)  # B worse by 1%
    r = stats.paired_bootstrap(a, b, counts)
    truth = (b.sum() - a.sum()) / counts.sum()
    assert r["diff"] == pytest.approx(truth)
    assert r["lo"] > 0 and r["excludes_0"]
    assert r["lo"] < 0.028 < r["hi"]
    assert r["rel_lo"] < 0.01 < r["rel_hi"]
    assert r["rel"] == pytest.approx(truth / (a.sum() / counts.sum()))
    # pairing is what makes it sharp: the text's difficulty (sd 0.35 per window) cancels
    assert r["hi"] - r["lo"] < 0.02
    flipped = stats.paired_bootstrap(b, a, counts)
    assert flipped["hi"] < 0 and flipped["diff"] == pytest.approx(-truth)


def test_paired_bootstrap_of_identical_runs_is_exactly_zero():
    rng = np.random.default_rng(1)
    counts, diff = _windows(rng)
    a = _run(diff, counts, rng)
    r = stats.paired_bootstrap(a, a.copy(), counts)
    assert r["diff"] == 0.0 and r["lo"] == 0.0 and r["hi"] == 0.0 and not r["excludes_0"]
    # and two runs that differ only by window noise include 0
    b = _run(diff, counts, rng)
    r = stats.paired_bootstrap(a, b, counts)
    assert r["lo"] < 0 < r["hi"]


def test_paired_bootstrap_is_reproducible_and_checks_its_input():
    rng = np.random.default_rng(2)
    counts, diff = _windows(rng)
    a, b = _run(diff, counts, rng), _run(diff, counts, rng, 0.01)
    assert stats.paired_bootstrap(a, b, counts, seed=3) == stats.paired_bootstrap(a, b, counts, seed=3)
    with pytest.raises(ValueError, match="do not match"):
        stats.paired_bootstrap(a[:-1], b, counts)
    with pytest.raises(ValueError, match="at least 2 windows"):
        stats.paired_bootstrap(a[:1], b[:1], counts[:1])


def test_group_interval_covers_a_known_seed_spread():
    """Seeds of one configuration differ by a spread of 1% (sd); B is 0.5% worse than A. Each pair of single
    runs has a narrow window interval that misses the truth for many pairs; the group interval covers it
    and is wider than any pair's window interval."""
    rng = np.random.default_rng(4)
    counts, diff = _windows(rng)
    spread, effect = 0.028, 0.014  # 1% and 0.5% of a 2.8-nat loss
    a = np.stack([_run(diff, counts, rng, rng.normal(0, spread)) for _ in range(4)])
    b = np.stack([_run(diff, counts, rng, effect + rng.normal(0, spread)) for _ in range(4)])
    g = stats.group_interval(a, b, counts)
    assert g["lo"] < effect < g["hi"]
    assert g["covers"] == "windows and seeds" and g["n_a"] == g["n_b"] == 4 and g["seed_df"] == 6
    assert g["seed_sd"] == pytest.approx(spread, rel=0.6)
    pairs = [stats.paired_bootstrap(x, y, counts) for x in a for y in b]
    assert all(g["hi"] - g["lo"] > p["hi"] - p["lo"] for p in pairs)
    missed = sum(not (p["lo"] < effect < p["hi"]) for p in pairs)
    assert missed >= 8, "single pairs should often miss the truth: their interval leaves out seed noise"


def test_group_interval_with_single_runs_covers_windows_only():
    rng = np.random.default_rng(5)
    counts, diff = _windows(rng)
    a, b = _run(diff, counts, rng), _run(diff, counts, rng, 0.02)
    g = stats.group_interval(a, b, counts)
    p = stats.paired_bootstrap(a, b, counts)
    assert g["covers"] == "windows only" and g["seed_df"] == 0
    assert g["diff"] == pytest.approx(p["diff"])
    assert g["hi"] - g["lo"] == pytest.approx(p["hi"] - p["lo"], rel=0.15)
    # one seed against three: the three give the spread, and it is used
    a3 = np.stack([_run(diff, counts, rng, rng.normal(0, 0.03)) for _ in range(3)])
    g = stats.group_interval(a3, b, counts)
    assert g["covers"] == "windows and seeds" and g["seed_df"] == 2


def test_group_interval_coverage_beats_the_plain_bootstrap_with_few_seeds():
    """The reason group_interval draws seeds from Student's t: with 3 seeds a group, simulated 80 times with
    no true difference, its 95% interval covers 0 at least 88% of the time (95% expected)."""
    rng = np.random.default_rng(6)
    counts, diff = _windows(rng, n=200)
    covered = 0
    for i in range(80):
        a = np.stack([_run(diff, counts, rng, rng.normal(0, 0.028)) for _ in range(3)])
        b = np.stack([_run(diff, counts, rng, rng.normal(0, 0.028)) for _ in range(3)])
        g = stats.group_interval(a, b, counts, n_boot=1000, seed=i)
        covered += g["lo"] <= 0 <= g["hi"]
    assert covered >= 0.88 * 80


def test_t_quantile_matches_tables():
    for p, df, value in ((0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 10, 2.228),
                         (0.8, 4, 0.941), (0.975, 1e6, 1.960)):
        assert stats.t_quantile(p, df) == pytest.approx(value, abs=2e-3)
    assert stats.t_quantile(0.025, 3) == pytest.approx(-stats.t_quantile(0.975, 3))
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)


def test_sizing_seeds_and_resolvable_difference():
    # spread 1%, no window noise: n = 2 (t + t)^2 sd^2 / effect^2 with t's at 2n - 2 degrees of freedom
    n = stats.seeds_needed(0.01, 0.01)
    df = 2 * n - 2
    t = stats.t_quantile(0.975, df) + stats.t_quantile(0.8, df)
    assert t * math.sqrt(2 * 0.01 ** 2 / n) <= 0.01
    df = 2 * (n - 1) - 2
    t = stats.t_quantile(0.975, df) + stats.t_quantile(0.8, df)
    assert t * math.sqrt(2 * 0.01 ** 2 / (n - 1)) > 0.01  # one seed fewer is not enough
    assert 17 <= n <= 19  # the normal approximation says 16, Student's t adds a little
    assert stats.seeds_needed(0.01, 0.002) < n
    assert stats.seeds_needed(0.01, 0.001, window_se=0.01) is None  # the text alone is too noisy
    assert stats.resolvable(0.01, 3, 3) == pytest.approx(stats.t_quantile(0.975, 4) * 0.01 * math.sqrt(2 / 3))
    assert stats.resolvable(0.01, 1, 1) == math.inf
