"""Bootstrap intervals and McNemar's test against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tasks.evaluation.stats import (
    accuracy,
    bootstrap_mean,
    mcnemar,
    minimal_detectable_effect,
    paired_difference,
    planned_mde,
)


@pytest.mark.parametrize(
    ("k", "n", "expected"),
    [
        (0, 0, 1.0),
        (0, 1, 1.0),  # 2 * 1/2
        (0, 5, 2 / 32),  # 2 * C(5,0)/2^5
        (1, 10, 2 * (1 + 10) / 1024),  # 0.021484375
        (9, 10, 2 * (1 + 10) / 1024),  # symmetric
        (2, 10, 2 * (1 + 10 + 45) / 1024),  # 0.109375
        (5, 10, 1.0),  # capped
        (3, 20, 2 * (1 + 20 + 190 + 1140) / 2**20),
    ],
)
def test_mcnemar_exact_is_the_two_sided_binomial_p(k, n, expected):
    """b = k discordant pairs for a, c = n - k for b: p = 2·P(X <= min(b, c)) under Bin(n, 1/2), capped at 1."""
    a = [1] * k + [0] * (n - k)
    assert mcnemar(a, [1 - x for x in a]).p_value == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_counts_discordant_pairs():
    # 3 concordant right, 2 concordant wrong, b = 1 (only a right), c = 9 (only b right)
    a = [1, 1, 1, 0, 0] + [1] + [0] * 9
    b = [1, 1, 1, 0, 0] + [0] + [1] * 9
    res = mcnemar(a, b)
    assert (res.b, res.c, res.method) == (1, 9, "exact")
    assert res.p_value == pytest.approx(22 / 1024, rel=1e-12)
    assert mcnemar(b, a).p_value == res.p_value
    assert (mcnemar(b, a).b, mcnemar(b, a).c) == (9, 1)


def test_mcnemar_chi2_with_continuity_correction():
    a = [1] * 1 + [0] * 9
    b = [0] * 1 + [1] * 9
    res = mcnemar(a, b, method="chi2")
    assert res.statistic == pytest.approx((8 - 1) ** 2 / 10)  # 4.9
    # chi2(1) survival at 4.9 = 0.026857 (tables); erfc(sqrt(2.45))
    assert res.p_value == pytest.approx(0.0268566, abs=1e-6)
    a, b = [1] * 16 + [0] * 4, [0] * 16 + [1] * 4  # (|16 - 4| - 1)² / 20 = 6.05
    assert mcnemar(a, b, method="chi2").p_value == pytest.approx(math.erfc(math.sqrt(6.05 / 2)), rel=1e-12)


def test_mcnemar_no_discordant_pairs_and_errors():
    assert mcnemar([1, 0], [1, 0]).p_value == 1.0
    assert mcnemar([1, 0], [1, 0], method="chi2").p_value == 1.0
    with pytest.raises(ValueError, match="differ in length"):
        mcnemar([1, 0], [1])
    with pytest.raises(ValueError, match="unknown method"):
        mcnemar([1], [0], method="fisher")


def test_bootstrap_two_values_hand_computed():
    # resample means of [0, 1] are 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4:
    # the 2.5% quantile is 0 and the 97.5% quantile is 1
    est = bootstrap_mean([0.0, 1.0], samples=4000, seed=3)
    assert (est.mean, est.low, est.high, est.n) == (0.5, 0.0, 1.0, 2)


def test_bootstrap_distribution_matches_resampling_with_replacement():
    # the multinomial shortcut has the distribution of n draws with replacement: compare the variance
    values = np.array([0, 0, 1, 1, 1, 2.5, 4.0])
    rng = np.random.default_rng(0)
    naive = values[rng.integers(0, values.size, size=(20000, values.size))].mean(axis=1)
    support, counts = np.unique(values, return_counts=True)
    fast = rng.multinomial(values.size, counts / values.size, size=20000) @ support / values.size
    expected_var = values.var() / values.size
    assert naive.var() == pytest.approx(expected_var, rel=0.05)
    assert fast.var() == pytest.approx(expected_var, rel=0.05)


def test_accuracy_interval_close_to_normal_approximation():
    correct = [True] * 300 + [False] * 700
    est = accuracy(correct, samples=4000, seed=0)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 1000)  # 0.0284
    assert est.mean == 0.3 and est.n == 1000
    assert est.low == pytest.approx(0.3 - half, abs=0.004)
    assert est.high == pytest.approx(0.3 + half, abs=0.004)


def test_bootstrap_seeded_and_degenerate_cases():
    data = [1, 0, 0, 1, 1, 1, 0]
    assert accuracy(data, seed=5) == accuracy(data, seed=5)
    assert accuracy(data, seed=5, samples=500) != accuracy(data, seed=6, samples=500)
    assert accuracy([1, 1, 1]).to_json() == {"mean": 1.0, "low": 1.0, "high": 1.0, "n": 3, "level": 0.95}
    empty = accuracy([])
    assert empty.n == 0 and math.isnan(empty.mean)
    with pytest.raises(ValueError):
        bootstrap_mean([1.0, float("nan")])
    with pytest.raises(ValueError):
        bootstrap_mean([1.0], samples=0)


def test_paired_difference_keeps_pairs_together():
    # a is right exactly where b is right, plus 10 more: every resample has a >= b
    b = [1] * 20 + [0] * 30
    a = [1] * 30 + [0] * 20
    est = paired_difference(a, b, samples=2000, seed=1)
    assert est.mean == pytest.approx(0.2)
    assert est.low > 0 and est.high < 0.35
    # identical models: interval collapses to 0
    same = paired_difference(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1], [1, 0])


def test_minimal_detectable_effect_has_the_stated_power():
    """Simulated paired 0/1 outcomes with a true effect equal to the MDE: McNemar at alpha 0.05 rejects
    in about 80% of the runs; at half the MDE far less often."""
    rng = np.random.default_rng(0)
    n, disc = 1500, 0.12
    mde = planned_mde(n, disc)
    assert mde == pytest.approx(2.8016 * math.sqrt(disc / n), rel=1e-4)

    def power(effect: float, runs: int = 400) -> float:
        hits = 0
        for _ in range(runs):
            u = rng.random(n)
            only_a, only_b = u < (disc + effect) / 2, (u >= (disc + effect) / 2) & (u < disc)
            b = rng.random(n) < 0.4
            a = b.copy()
            a[only_a], b[only_a] = True, False
            a[only_b], b[only_b] = False, True
            hits += mcnemar(a, b).p_value < 0.05
        return hits / runs

    assert 0.7 <= power(mde) <= 0.9
    assert power(mde / 2) < 0.45
    observed = minimal_detectable_effect(np.r_[np.ones(90), -np.ones(90), np.zeros(n - 180)])
    assert observed == pytest.approx(planned_mde(n, 180 / n), rel=0.01)
    assert math.isnan(minimal_detectable_effect([0.5]))
    with pytest.raises(ValueError):
        planned_mde(0, 0.1)
