"""Confidence intervals over seeds: Student's t quantiles, means and paired differences.

No scipy: the two-sided 95% quantiles of Student's t for 1-30 degrees of freedom are tabulated
(to 3 decimals, as every statistics textbook prints them; a test integrates the t density to
check each), and larger df interpolate in 1/df towards the normal's 1.960.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# t_{0.975, df} for df = 1 .. 30
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)
_T975_TAIL = ((30, 2.042), (40, 2.021), (60, 2.000), (120, 1.980), (math.inf, 1.960))


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (the half-width factor of
    a two-sided 95% interval); ValueError for df < 1."""
    if df < 1:
        raise ValueError(f"Student's t needs df >= 1; got {df}.")
    if df <= 30:
        return _T975[df - 1]
    for (df0, t0), (df1, t1) in zip(_T975_TAIL, _T975_TAIL[1:]):
        if df <= df1:  # linear in 1/df, exact at the tabulated points
            w = (1 / df0 - 1 / df) / (1 / df0 - 1 / df1)
            return t0 + w * (t1 - t0)
    return 1.960  # pragma: no cover - df1 = inf catches every df


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` values with its 95% confidence interval ``[low, high]`` (t distribution);
    ``half`` is NaN for a single value, whose spread is unknown."""

    mean: float
    half: float
    n: int

    @property
    def low(self) -> float:
        return self.mean - self.half

    @property
    def high(self) -> float:
        return self.mean + self.half

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly on one side of 0 (a resolved difference); False for n = 1."""
        return self.n > 1 and (self.low > 0 or self.high < 0)

    def format(self, fmt: str = "{:.3f}") -> str:
        """``mean ± half`` (just the mean for n = 1; n/a for a metric not recorded)."""
        if math.isnan(self.mean):
            return "n/a"
        if self.n < 2:
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {fmt.format(self.half).lstrip('+')}"

    def to_dict(self) -> dict:
        return asdict(self) | {"low": self.low, "high": self.high}


def mean_ci(values: Sequence[float]) -> Interval:
    """Mean and 95% CI half-width ``t_{0.975, n-1} * s / sqrt(n)`` of ``values``."""
    if not values:
        raise ValueError("mean_ci needs at least one value.")
    n = len(values)
    if any(math.isnan(v) for v in values):  # a metric older results did not record
        return Interval(math.nan, math.nan, n)
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, math.nan, 1)
    return Interval(mean, t_quantile_975(n - 1) * statistics.stdev(values) / math.sqrt(n), n)


def paired_ci(values: dict[int, float], reference: dict[int, float]) -> Interval | None:
    """CI of the mean of ``values[s] - reference[s]`` over the seeds ``s`` both have (None if none).

    Pairing by seed removes what the two share (data order, initial-weight seed), so the interval
    of a difference is usually much narrower than either variant's own."""
    seeds = sorted(set(values) & set(reference))
    if not seeds:
        return None
    return mean_ci([values[s] - reference[s] for s in seeds])


def verdict(name: str, reference: str, what: str, diff: Interval, unit: str, lower_is: str) -> str:
    """One plain sentence: is the difference ``diff`` (name - reference) resolved at 95%?"""
    if diff.n < 2:
        return f"{what}: {name} - {reference} = {diff.mean:+.4f} {unit} from one seed; its uncertainty is unknown."
    direction = "lower" if diff.mean < 0 else "higher"
    span = f"{diff.mean:+.4f} {unit}, 95% CI [{diff.low:+.4f}, {diff.high:+.4f}] over {diff.n} seeds"
    if diff.excludes_zero:
        better = "better" if (diff.mean < 0) == (lower_is == "better") else "worse"
        return f"{what}: {name} is {direction} than {reference} ({span}): resolved, {name} is {better}."
    return f"{what}: {name} vs {reference} is not resolved ({span}; the interval includes 0)."
