"""Intervals for comparing language models: how sure is a difference in next-token loss?

Two sources of noise decide whether a difference between two runs is real:
  - the evaluation text: another sample of validation windows gives other losses. Scoring every model on
    the same windows and resampling the windows (a paired bootstrap) measures it;
  - the training run: another seed of the same configuration ends elsewhere (about 1% apart for two seeds
    of the 1500-step baseline, far more than the windows' noise). Only several seeds per configuration
    measure it, and no amount of evaluation text removes it.
`paired_bootstrap` covers the first only: use it for two single runs, and say so. `group_interval`
covers both, for groups of seeds. `seed_paired_interval` covers both for groups whose seeds come in pairs
(seed k of A with seed k of B, e.g. one training scored with its averaged and its last weights), where
what a pair shares cancels. `seeds_needed` sizes an experiment from a measured seed spread.

Inputs are per-window sums: `nll[w]` the summed next-token loss (nats) over window w's real targets and
`counts[w]` how many there are; a loss over any set of windows is sum(nll) / sum(counts), so every target
weighs the same. Differences are B - A (negative = B is better); relative ones are (B - A) / A, which for
two models with the same tokenizer is also the relative difference in bits per byte.
"""

import math

import numpy as np

LEVEL = 0.95
N_BOOT = 4000


def _window_weights(num_windows: int, n_boot: int, rng) -> np.ndarray:
    """(n_boot, W) how often each window is drawn in each bootstrap replicate (W draws with replacement)."""
    return rng.multinomial(num_windows, np.full(num_windows, 1.0 / num_windows), size=n_boot).astype(np.float64)


def _check(nll, counts):
    nll, counts = np.asarray(nll, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or nll.shape[-1] != counts.shape[0]:
        raise ValueError(f"per-window losses of shape {nll.shape} do not match {counts.shape[0]} window counts")
    if counts.shape[0] < 2:
        raise ValueError("need at least 2 windows to resample")
    return nll, counts


def _summary(point: float, base: float, draws: np.ndarray, rel_draws: np.ndarray, level: float) -> dict:
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    rlo, rhi = np.quantile(rel_draws, [(1 - level) / 2, (1 + level) / 2])
    return {"diff": point, "lo": float(lo), "hi": float(hi), "rel": point / base, "rel_lo": float(rlo),
            "rel_hi": float(rhi), "excludes_0": bool(lo > 0 or hi < 0)}


def paired_bootstrap(nll_a, nll_b, counts, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Loss of run B minus loss of run A on the same windows, with a paired bootstrap interval.

    Resampled: the evaluation windows (with replacement, the same draw for both runs, so what the two runs
    share cancels). Not covered: seed noise; another seed of either run may land outside the interval.
    Returns {diff, lo, hi, rel, rel_lo, rel_hi, excludes_0}: the difference in mean loss per target, its
    percentile interval at `level`, the same relative to A's loss, and whether the interval excludes 0.
    Two identical runs give diff = lo = hi = 0 exactly.
    """
    nll_a, counts = _check(nll_a, counts)
    nll_b, _ = _check(nll_b, counts)
    w = _window_weights(len(counts), n_boot, np.random.default_rng(seed))
    n = w @ counts
    a, b = (w @ nll_a) / n, (w @ nll_b) / n
    base = nll_a.sum() / counts.sum()
    return _summary(nll_b.sum() / counts.sum() - base, base, b - a, (b - a) / a, level)


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (bisection on its CDF, integrated by
    Simpson's rule; about 6 correct digits, plenty for an interval)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def cdf(x):
        u = np.linspace(0.0, x, 2001)
        f = np.exp(log_c - (df + 1) / 2 * np.log1p(u * u / df))
        return 0.5 + (u[1] - u[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def seed_spread(losses_a, losses_b=None) -> tuple[float, int]:
    """(pooled standard deviation over seeds, its degrees of freedom) of one or two groups' per-seed
    losses, each group around its own mean. (nan, 0) when no group has two seeds."""
    groups = [np.asarray(g, dtype=np.float64) for g in (losses_a, losses_b) if g is not None]
    df = sum(len(g) - 1 for g in groups)
    if df <= 0:
        return float("nan"), 0
    ss = sum(((g - g.mean()) ** 2).sum() for g in groups)
    return math.sqrt(ss / df), df


def group_interval(nll_a, nll_b, counts, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Mean loss of group B minus mean loss of group A (each a set of seeds of one configuration), with an
    interval that covers both the evaluation text and seed noise.

    nll_a: (seeds of A, windows), nll_b: (seeds of B, windows), all scored on the same windows.
    Each bootstrap replicate
      - resamples the windows (the same draw for every run: paired), giving each group's mean loss, and
      - resamples the seeds: it adds a draw of the difference between two groups' seed means, from
        Student's t with the seeds' pooled spread (`seed_spread`, df = n_A + n_B - 2) scaled by
        sqrt(1/n_A + 1/n_B).
    Why seeds are resampled from a fitted t rather than by drawing the seeds at hand with replacement:
    with 2 to 5 seeds such draws can only reshuffle the few losses there are, and their interval is far
    too narrow: in a simulation (475 windows, a seed spread of 1%, 300 trials each) the 95% interval of
    that plain bootstrap covered the true difference 70% of the time with 2 seeds a group, 81% with 3 and
    88% with 5; this one covered it 95%, 95% and 97% (tests/test_stats.py repeats a smaller check). The
    t draw is the small-sample answer, and tends to the plain bootstrap as seeds grow. With one seed in
    each group there is no spread to measure: the interval covers the windows only, and `covers` says so.
    Returns paired_bootstrap's keys plus n_a, n_b, mean_a, mean_b, sd_a, sd_b (over seeds), seed_sd and
    seed_df (pooled), window_se_rel (the windows' share of the noise, relative to A's mean), covers
    ("windows and seeds" or "windows only").
    """
    return _seeds_and_windows(nll_a, nll_b, counts, False, level, n_boot, seed)


def seed_paired_interval(nll_a, nll_b, counts, level: float = LEVEL, n_boot: int = N_BOOT,
                         seed: int = 0) -> dict:
    """Like `group_interval`, for groups whose seeds come in pairs: row i of nll_a and row i of nll_b are
    the same seed of two configurations (or the same training scored two ways), and the pair is the unit.

    Each seed's difference d_i = B_i - A_i is what varies; a seed's own luck, shared by its pair, cancels.
    Each bootstrap replicate resamples the windows (the same draw for every run), giving the mean of the
    d_i, and adds a draw of the seeds: Student's t with n - 1 degrees of freedom, scaled by the d_i's
    standard deviation over seeds / sqrt(n) (the paired t interval). It is valid whether or not the pairs
    are correlated, but has half group_interval's degrees of freedom, so it is only narrower when they are:
    decide to pair before looking at either interval, never by which is narrower.
    Returns group_interval's keys, with seed_sd and seed_df those of the differences (df = n - 1), paired
    True and covers "windows and seeds, paired"; one pair gives the windows only, like paired_bootstrap.
    """
    return _seeds_and_windows(nll_a, nll_b, counts, True, level, n_boot, seed)


def _seeds_and_windows(nll_a, nll_b, counts, paired: bool, level: float, n_boot: int, seed: int) -> dict:
    """group_interval (paired=False) and seed_paired_interval (paired=True): the windows resampled for every
    run alike, plus a t draw for the seeds, whose spread, degrees of freedom and scale are the groups'
    pooled ones or the pairs' differences'."""
    nll_a, counts = _check(np.atleast_2d(nll_a), counts)
    nll_b, _ = _check(np.atleast_2d(nll_b), counts)
    if paired and nll_a.shape[0] != nll_b.shape[0]:
        raise ValueError(f"seed pairs need as many seeds in each group, got {nll_a.shape[0]} and {nll_b.shape[0]}")
    rng = np.random.default_rng(seed)
    total = counts.sum()
    per_a, per_b = nll_a.sum(1) / total, nll_b.sum(1) / total          # each seed's loss on all windows
    if paired:
        n = len(per_a)
        sd, df = (float((per_b - per_a).std(ddof=1)), n - 1) if n > 1 else (float("nan"), 0)
        scale = 1 / math.sqrt(n)
    else:
        sd, df = seed_spread(per_a, per_b)
        scale = math.sqrt(1 / len(per_a) + 1 / len(per_b))
    w = _window_weights(len(counts), n_boot, rng)
    n = w @ counts
    a, b = (w @ nll_a.T).mean(1) / n, (w @ nll_b.T).mean(1) / n        # group means per replicate
    draws = b - a
    window_se = float(draws.std())  # the windows' share of the noise, before the seeds'
    if df > 0:
        draws = draws + sd * scale * rng.standard_t(df, size=n_boot)
    base = per_a.mean()
    out = _summary(per_b.mean() - base, base, draws, draws / a, level)
    sd_of = lambda g: float(g.std(ddof=1)) if len(g) > 1 else float("nan")
    covers = ("windows and seeds, paired" if paired else "windows and seeds") if df > 0 else "windows only"
    out.update(n_a=len(per_a), n_b=len(per_b), mean_a=float(base), mean_b=float(per_b.mean()), sd_a=sd_of(per_a),
               sd_b=sd_of(per_b), seed_sd=sd, seed_df=df, window_se_rel=window_se / float(base), paired=paired,
               covers=covers)
    return out


def seeds_needed(effect: float, seed_sd: float, window_se: float = 0.0, level: float = LEVEL,
                 power: float = 0.8, max_seeds: int = 1000, paired: bool = False) -> int | None:
    """Seeds per group for a group-vs-group interval to exclude 0 with probability `power` when the true
    difference is `effect`, given the seed spread `seed_sd` and the window noise of the difference
    `window_se` (all in the same unit, e.g. relative). The usual sizing rule with Student's t:
    (t_level + t_power) * sqrt(2 seed_sd^2 / n + window_se^2) <= |effect|, at 2n - 2 degrees of freedom.
    paired: seed_sd is the spread of the pairs' differences (`seed_paired_interval`), the rule
    sqrt(seed_sd^2 / n + window_se^2) at n - 1 degrees of freedom, and the answer counts pairs.
    None if even max_seeds do not reach it (the window noise alone is too large: score on more text)."""
    if not seed_sd >= 0 or effect == 0:
        return None
    for n in range(2, max_seeds + 1):
        df, var = (n - 1, seed_sd ** 2 / n) if paired else (2 * n - 2, 2 * seed_sd ** 2 / n)
        need = (t_quantile((1 + level) / 2, df) + t_quantile(power, df)) * math.sqrt(var + window_se ** 2)
        if need <= abs(effect):
            return n
    return None


def resolvable(seed_sd: float, n_a: int, n_b: int, window_se: float = 0.0, level: float = LEVEL,
               paired: bool = False) -> float:
    """The smallest difference a group-vs-group interval can tell from 0 with n_a and n_b seeds at this seed
    spread: the interval's half-width, t * sqrt(seed_sd^2 (1/n_a + 1/n_b) + window_se^2), t at n_a + n_b - 2
    degrees of freedom; paired (n_a = n_b = n pairs, seed_sd the differences' spread): t * sqrt(seed_sd^2 / n
    + window_se^2) at n - 1. inf without a measured spread (one seed each)."""
    if paired:
        df, var = n_a - 1, seed_sd ** 2 / n_a
    else:
        df, var = n_a + n_b - 2, seed_sd ** 2 * (1 / n_a + 1 / n_b)
    if df <= 0 or not seed_sd >= 0:
        return math.inf
    return t_quantile((1 + level) / 2, df) * math.sqrt(var + window_se ** 2)
