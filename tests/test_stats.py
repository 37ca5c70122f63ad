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


@pytest.mark.slow
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


@pytest.mark.slow
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


def _twins(rng, counts, diff, n, luck=0.028, effect=0.0, pair_noise=0.001):
    """n seeds of A and of B where seed k's luck (sd `luck`) is shared by both sides, as one training scored
    with its averaged and its last weights is: B_k = A_k's luck + effect + a little noise of the pair's own."""
    lucks = rng.normal(0, luck, n)
    a = np.stack([_run(diff, counts, rng, x) for x in lucks])
    b = np.stack([_run(diff, counts, rng, x + effect + rng.normal(0, pair_noise)) for x in lucks])
    return a, b


@pytest.mark.slow
def test_seed_paired_interval_cancels_what_a_pair_shares():
    """Seeds spread by 1%, B is 0.5% worse than A in every pair: unpaired, the spread hides it; paired, it is
    resolved, and the interval covers the truth."""
    rng = np.random.default_rng(7)
    counts, diff = _windows(rng)
    a, b = _twins(rng, counts, diff, 3, effect=0.014)
    p = stats.seed_paired_interval(a, b, counts)
    g = stats.group_interval(a, b, counts)
    assert p["diff"] == pytest.approx(g["diff"])  # pairing changes the interval, not the estimate
    assert p["covers"] == "windows and seeds, paired" and p["seed_df"] == 2 and p["n_a"] == p["n_b"] == 3
    assert p["lo"] > 0 and p["lo"] < 0.014 < p["hi"]
    assert g["lo"] < 0 < g["hi"], "unpaired, a 1% seed spread should hide a 0.5% difference with 3 seeds"
    assert p["hi"] - p["lo"] < (g["hi"] - g["lo"]) / 4
    # the spread it uses is the pairs' differences', far below the seeds' own
    assert p["seed_sd"] < 0.25 * g["seed_sd"]
    # the pairing is by row: shuffling one side's seeds breaks it, and the interval widens to the seeds' spread
    shuffled = stats.seed_paired_interval(a, b[[1, 2, 0]], counts)
    assert shuffled["hi"] - shuffled["lo"] > 3 * (p["hi"] - p["lo"])
    # identical twins differ by exactly 0; one pair covers the windows only; unequal groups are refused
    same = stats.seed_paired_interval(a, a.copy(), counts)
    assert same["diff"] == same["lo"] == same["hi"] == 0.0
    one = stats.seed_paired_interval(a[:1], b[:1], counts)
    assert one["covers"] == "windows only" and one["seed_df"] == 0
    assert one["hi"] - one["lo"] == pytest.approx(
        (lambda r: r["hi"] - r["lo"])(stats.paired_bootstrap(a[0], b[0], counts)), rel=0.15)
    with pytest.raises(ValueError, match="as many seeds"):
        stats.seed_paired_interval(a, b[:2], counts)


@pytest.mark.slow
def test_seed_paired_interval_covers_95_percent_with_three_pairs():
    """No true difference, seeds spread by 1% and pairs by 0.3% of their own: over 80 simulated experiments of 3
    pairs, the 95% interval covers 0 at least 88% of the time; with the pairs' own noise at 0, so that only
    the windows vary, it still does (the windows are in every replicate)."""
    rng = np.random.default_rng(8)
    counts, diff = _windows(rng, n=200)
    for pair_noise in (0.0084, 0.0):
        covered = 0
        for i in range(80):
            a, b = _twins(rng, counts, diff, 3, pair_noise=pair_noise)
            r = stats.seed_paired_interval(a, b, counts, n_boot=1000, seed=i)
            covered += r["lo"] <= 0 <= r["hi"]
        assert covered >= 0.88 * 80, pair_noise


def test_t_quantile_matches_tables():
    for p, df, value in ((0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 10, 2.228),
                         (0.8, 4, 0.941), (0.975, 1e6, 1.960)):
        assert stats.t_quantile(p, df) == pytest.approx(value, abs=2e-3)
    assert stats.t_quantile(0.025, 3) == pytest.approx(-stats.t_quantile(0.975, 3))
    with pytest.raises(ValueError):
        stats.t_quantile(1.0, 3)


@pytest.mark.slow
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


def test_sizing_for_seed_pairs():
    """Paired: the spread is the pairs' differences', the variance sd^2 / n at n - 1 degrees of freedom."""
    n = stats.seeds_needed(0.01, 0.005, paired=True)
    t = lambda df: stats.t_quantile(0.975, df) + stats.t_quantile(0.8, df)
    assert t(n - 1) * 0.005 / math.sqrt(n) <= 0.01 < t(n - 2) * 0.005 / math.sqrt(n - 1)
    assert stats.seeds_needed(0.01, 0.0002, paired=True) == 2
    half = stats.t_quantile(0.975, 2) * 0.003 / math.sqrt(3)
    assert stats.resolvable(0.003, 3, 3, paired=True) == pytest.approx(half)
    assert stats.resolvable(0.003, 1, 1, paired=True) == math.inf
