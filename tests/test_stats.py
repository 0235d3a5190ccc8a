"""eval.stats: t quantiles against the t distribution itself, intervals, paired differences, verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from eval.stats import Interval, mean_ci, paired_ci, t_quantile_975, verdict


def t_cdf(x: float, df: int) -> float:
    """Student's t CDF by integrating its density (independent of the table under test)."""
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    grid = np.linspace(0.0, x, 200_001)
    density = np.exp(log_c - (df + 1) / 2 * np.log1p(grid**2 / df))
    return 0.5 + float(np.trapezoid(density, grid))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 19, 30, 45, 100, 1000])
def test_t_quantile_is_the_975_point_of_students_t(df):
    assert t_cdf(t_quantile_975(df), df) == pytest.approx(0.975, abs=2e-4)


def test_t_quantile_known_values_and_limits():
    assert (t_quantile_975(1), t_quantile_975(4), t_quantile_975(30)) == (12.706, 2.776, 2.042)
    assert t_quantile_975(10**9) == pytest.approx(1.960, abs=1e-6)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_mean_ci_and_paired_ci():
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # s = sqrt(2.5), n = 5, t = 2.776
    assert ci.mean == 3.0 and ci.half == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))
    assert ci.excludes_zero and not mean_ci([-1.0, 1.0, 0.5]).excludes_zero
    single = mean_ci([0.3])
    assert math.isnan(single.half) and not single.excludes_zero and single.format() == "0.300"
    diff = paired_ci({1: 3.1, 2: 3.5, 3: 9.0}, {1: 3.0, 2: 3.2})  # seed 3 has no partner
    assert diff.n == 2 and diff.mean == pytest.approx(0.2)
    assert paired_ci({1: 1.0}, {2: 1.0}) is None


def test_verdicts_say_resolved_or_not():
    resolved = verdict("swiglu", "mlp-gelu", "Q1", Interval(-0.05, 0.02, 5), "bits/byte", "better")
    assert "resolved, swiglu is better" in resolved and "[-0.0700, -0.0300]" in resolved
    worse = verdict("kan", "mlp-gelu", "Q1", Interval(0.05, 0.02, 5), "bits/byte", "better")
    assert "resolved, kan is worse" in worse
    assert "not resolved" in verdict("kan", "mlp-gelu", "Q2", Interval(0.01, 0.02, 5), "bits/byte", "better")
    assert "one seed" in verdict("kan", "mlp-gelu", "Q2", Interval(0.01, math.nan, 1), "bits/byte", "better")
