"""Kaplan-Meier estimator, written to give the numbers lifelines' KaplanMeierFitter gives (DOMAIN.md).

Pure Python on purpose: the study service must not need numpy/pandas to produce its tables, and the
conventions below are copied from lifelines 0.30 (fitters/kaplan_meier_fitter.py, utils/__init__.py)
so that the tests can hold us to its output:

- the table has one row per distinct duration (event or censoring) plus time 0; at_risk is the number
  with duration >= t, events and censored the numbers ending at t;
- Greenwood: the sum of d / (n (n - d)) over event times, where a term with n == d (S drops to 0)
  counts as 0, as lifelines replaces the infinite term by 0;
- confidence interval "exponential Greenwood" (log(-log S), R's "log-log"):
  exp(-exp(log(-log S) -/+ z sqrt(sum) / log S)); lifelines turns the NaN it gets at S == 1 into 1,
  and at S == 0 both bounds are 0;
- median: first time S(t) <= 0.5; median CI: the same search on the lower and upper bound curves.

S is kept as an exact fraction as well: lifelines computes exp(sum(log((n-d)/n))), whose rounding puts
S a hair above or below 0.5 when it is exactly 0.5, so its median there depends on the floating-point
library. We decide "S <= 0.5" exactly, which is what the definition says.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from fractions import Fraction
from statistics import NormalDist

from pydantic import BaseModel, ConfigDict, Field


class KaplanMeier(BaseModel):
    """The event-time table; every tuple has one entry per time."""

    model_config = ConfigDict(frozen=True)

    alpha: float
    n: int
    times: tuple[float, ...]  # 0 and every distinct duration, ascending
    at_risk: tuple[int, ...]  # duration >= t
    events: tuple[int, ...]
    censored: tuple[int, ...]
    survival: tuple[float, ...]
    greenwood_sum: tuple[float, ...]  # sum d/(n(n-d)): the variance of log S (lifelines' _cumulative_sq_)
    variance: tuple[float, ...]  # Greenwood's Var[S(t)] = S(t)^2 * greenwood_sum
    ci_lower: tuple[float, ...]
    ci_upper: tuple[float, ...]
    survival_exact: tuple[Fraction, ...] = Field(exclude=True, repr=False)

    def _row(self, t: float) -> int:
        """Index of the last time <= t (-1 before time 0): the curves are right-continuous steps."""
        return bisect_right(self.times, t) - 1

    def survival_at(self, t: float) -> float:
        """S(t); 1 before time 0 (lifelines gives NaN there) and the last value after the last time."""
        i = self._row(t)
        return 1.0 if i < 0 else self.survival[i]

    def ci_at(self, t: float) -> tuple[float, float]:
        i = self._row(t)
        return (1.0, 1.0) if i < 0 else (self.ci_lower[i], self.ci_upper[i])

    def at_risk_at(self, t: float) -> int:
        """Numbers at risk at t as lifelines' add_at_risk_counts shows them under a plot (its default,
        "end of period"): the at-risk count of the last row <= t minus those removed at that row, i.e.
        the subjects whose duration is > t. A subject censored or dying exactly at t is not counted.
        Before time 0 lifelines shows 0."""
        i = self._row(t)
        return 0 if i < 0 else self.at_risk[i] - self.events[i] - self.censored[i]

    def censored_by(self, t: float) -> int:
        """Subjects censored at or before t (lifelines' "Censored" row under a plot)."""
        return sum(self.censored[: self._row(t) + 1])

    def events_by(self, t: float) -> int:
        """Events at or before t (lifelines' "Events" row under a plot)."""
        return sum(self.events[: self._row(t) + 1])

    def median(self) -> float | None:
        """First time S(t) <= 0.5; None if S never gets there (lifelines: inf)."""
        return next((t for t, s in zip(self.times, self.survival_exact, strict=True) if s <= Fraction(1, 2)), None)

    def median_ci(self) -> tuple[float | None, float | None]:
        """(lower, upper) of the median's CI as lifelines.utils.median_survival_times(confidence_interval_):
        the first time the lower (resp. upper) bound is <= 0.5; None where it never is."""
        return _first_at_or_below_half(self.times, self.ci_lower), _first_at_or_below_half(self.times, self.ci_upper)


def _first_at_or_below_half(times: Sequence[float], curve: Sequence[float]) -> float | None:
    # lifelines.utils.qth_survival_time: inf if the last value is above q, otherwise numpy's
    # searchsorted (a left bisection) of -q in -curve. Same algorithm, so same answer even if a
    # bound curve were not monotone.
    if curve[-1] > 0.5:
        return None
    return times[bisect_left([-v for v in curve], -0.5)]


def _log_log_bounds(s: float, greenwood_sum: float, z: float) -> tuple[float, float]:
    if s == 1.0:  # log(-log 1) is -inf and the ratio 0/0: lifelines fills the NaN with 1
        return 1.0, 1.0
    if s == 0.0:  # log(-log 0) is +inf: both bounds exp(-inf) = 0
        return 0.0, 0.0
    v = math.log(s)
    half_width = z * math.sqrt(greenwood_sum) / v  # negative: v < 0
    return _exp_neg_exp(math.log(-v) - half_width), _exp_neg_exp(math.log(-v) + half_width)


def _exp_neg_exp(x: float) -> float:
    # numpy overflows exp to inf (and exp(-inf) = 0); math.exp raises instead.
    return 0.0 if x > 709.0 else math.exp(-math.exp(x))


def kaplan_meier(durations: Sequence[float], observed: Sequence[bool], alpha: float = 0.05) -> KaplanMeier:
    """Right-censored Kaplan-Meier estimate. durations >= 0; observed True = event, False = censored."""
    if len(durations) != len(observed):
        raise ValueError("durations and observed differ in length")
    if not durations:
        raise ValueError("no subjects: the Kaplan-Meier estimate is undefined")
    if any(not math.isfinite(d) or d < 0 for d in durations):
        raise ValueError("durations must be finite and >= 0")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    z = NormalDist().inv_cdf(1 - alpha / 2)

    times = sorted({0.0, *(float(d) for d in durations)})
    events = {t: 0 for t in times}
    censored = {t: 0 for t in times}
    for d, e in zip(durations, observed, strict=True):
        (events if e else censored)[float(d)] += 1

    at_risk, exact, sums, lower, upper = [], [], [], [], []
    n, s, gw = len(durations), Fraction(1), 0.0
    for t in times:
        d = events[t]
        if d:
            s *= Fraction(n - d, n)
            if n > d:  # the n == d term is infinite; lifelines counts it as 0
                gw += d / (n * (n - d))
        bounds = _log_log_bounds(float(s), gw, z)
        at_risk.append(n)
        exact.append(s)
        sums.append(gw)
        lower.append(bounds[0])
        upper.append(bounds[1])
        n -= d + censored[t]

    survival = tuple(float(v) for v in exact)
    return KaplanMeier(
        alpha=alpha,
        n=len(durations),
        times=tuple(times),
        at_risk=tuple(at_risk),
        events=tuple(events[t] for t in times),
        censored=tuple(censored[t] for t in times),
        survival=survival,
        greenwood_sum=tuple(sums),
        variance=tuple(sv * sv * g for sv, g in zip(survival, sums, strict=True)),
        ci_lower=tuple(lower),
        ci_upper=tuple(upper),
        survival_exact=tuple(exact),
    )
