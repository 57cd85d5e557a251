"""Accuracy statistics: bootstrap confidence intervals (numpy) and paired tests (``scipy.stats``).

    >>> est = accuracy([1, 0, 1, 1], samples=2000, seed=0)
    >>> est.mean, est.n
    (0.75, 4)
    >>> mcnemar([1, 1, 0, 1], [0, 1, 0, 0]).p_value   # 2 discordant pairs, both favour a
    0.5

* :func:`bootstrap_mean` resamples with replacement (percentile interval). A resample of ``n`` values
  is drawn as multinomial counts over the distinct values, which has exactly the distribution of
  ``n`` draws with replacement but needs memory ``samples × distinct`` instead of ``samples × n``.
* :func:`paired_difference` bootstraps ``mean(a - b)`` over problems (pairs are kept together).
* :func:`mcnemar` tests whether two models on the same problems differ: the exact two-sided
  binomial test on the discordant pairs (``scipy.stats.binomtest``, default) or the chi-square with
  continuity correction (``scipy.stats.chi2``).

The bootstrap stays here rather than ``scipy.stats.bootstrap``: scipy draws index resamples (memory
``samples × n``) from its own random stream, so every interval of the reports would change; this one is
seeded and reproduces the published numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with its bootstrap interval at ``level`` (low = high = mean when n = 0 is NaN)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class McNemar:
    """``b`` = pairs where only ``a`` is right, ``c`` = pairs where only ``b`` is right."""

    b: int
    c: int
    statistic: float  # exact: min(b, c); chi2: the corrected chi-square
    p_value: float
    method: Literal["exact", "chi2"]

    def to_json(self) -> dict:
        return asdict(self)


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: values must be finite")
    return arr


def bootstrap_mean(values: Sequence[float] | np.ndarray, *, samples: int = 2000, seed: int = 0,
                   level: float = 0.95) -> Estimate:
    """Mean of ``values`` with a percentile bootstrap interval (``samples`` resamples, seeded)."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    if not 0 < level < 1:
        raise ValueError("level must be in (0, 1)")
    arr = _as_array(values, "values")
    n = arr.size
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, level)
    support, counts = np.unique(arr, return_counts=True)
    mean = float(arr.mean())
    if support.size == 1:
        return Estimate(mean, mean, mean, n, level)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n, counts / n, size=samples)  # (samples, distinct)
    means = draws @ support / n
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return Estimate(mean, float(low), float(high), n, level)


def accuracy(correct: Sequence[bool] | np.ndarray, *, samples: int = 2000, seed: int = 0,
             level: float = 0.95) -> Estimate:
    """Share of ``True`` with a bootstrap interval."""
    return bootstrap_mean(np.asarray(correct, dtype=bool).astype(float), samples=samples, seed=seed,
                          level=level)


def _paired(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=bool).reshape(-1)
    y = np.asarray(b, dtype=bool).reshape(-1)
    if x.size != y.size:
        raise ValueError(f"paired samples differ in length: {x.size} != {y.size}")
    return x, y


def paired_difference(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray, *,
                      samples: int = 2000, seed: int = 0, level: float = 0.95) -> Estimate:
    """``accuracy(a) - accuracy(b)`` on the same problems, bootstrapping problems (pairs stay together)."""
    x, y = _paired(a, b)
    return bootstrap_mean(x.astype(float) - y.astype(float), samples=samples, seed=seed, level=level)


def mcnemar(a: Sequence[bool] | np.ndarray, b: Sequence[bool] | np.ndarray, *,
            method: Literal["exact", "chi2"] = "exact") -> McNemar:
    """McNemar's test on paired correctness vectors.

    ``exact``: two-sided binomial test of ``b`` successes in ``b + c`` trials with p = 1/2.
    ``chi2``: ``(|b - c| - 1)² / (b + c)`` (Edwards' continuity correction) against chi-square(1).
    With no discordant pair the test has nothing to say: p = 1.
    """
    x, y = _paired(a, b)
    nb = int(np.sum(x & ~y))
    nc = int(np.sum(~x & y))
    if method not in ("exact", "chi2"):
        raise ValueError(f"mcnemar: unknown method {method!r} (exact|chi2)")
    if nb + nc == 0:
        return McNemar(nb, nc, 0.0, 1.0, method)
    from scipy import stats  # imported here: ~0.7 s, and only a report needs it

    if method == "exact":
        return McNemar(nb, nc, float(min(nb, nc)), float(stats.binomtest(nb, nb + nc, 0.5).pvalue), "exact")
    stat = (max(abs(nb - nc) - 1, 0)) ** 2 / (nb + nc)
    return McNemar(nb, nc, float(stat), float(stats.chi2.sf(stat, 1)), "chi2")


def _z_sum(alpha: float, power: float) -> float:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    from statistics import NormalDist

    return NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)


def minimal_detectable_effect(diffs: Sequence[float] | np.ndarray, *, alpha: float = 0.05,
                              power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired test at ``alpha`` detects with probability
    ``power``, given the observed per-problem differences ``diffs`` (e.g. an arm's correctness minus SFT's,
    averaged over seeds): ``(z_{1-alpha/2} + z_power) * sd(diffs) / sqrt(n)`` (normal approximation).
    NaN with fewer than two differences.

    >>> round(minimal_detectable_effect([1, -1] * 50), 4)   # sd 1.005, n 100
    0.2816
    """
    d = _as_array(diffs, "diffs")
    if d.size < 2:
        return float("nan")
    return float(_z_sum(alpha, power) * d.std(ddof=1) / math.sqrt(d.size))


def planned_mde(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """The minimal detectable effect of a paired comparison on ``n`` problems where a share ``discordance``
    of the pairs disagree (then sd of the 0/±1 difference ≈ sqrt(discordance) for a small effect): for
    sizing a test set before running it.

    >>> round(planned_mde(2000, 0.1), 4)   # 2,000 problems, 10% discordant
    0.0198
    """
    if n < 1 or not 0 <= discordance <= 1:
        raise ValueError(f"need n >= 1 and discordance in [0, 1], got {n}, {discordance}")
    return _z_sum(alpha, power) * math.sqrt(discordance / n)


__all__ = ["Estimate", "McNemar", "accuracy", "bootstrap_mean", "mcnemar", "minimal_detectable_effect",
           "paired_difference", "planned_mde"]
