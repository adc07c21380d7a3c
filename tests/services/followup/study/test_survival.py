"""Our Kaplan-Meier estimator against hand-worked examples and against lifelines' KaplanMeierFitter."""

import math
import re
from fractions import Fraction

import matplotlib

matplotlib.use("Agg")

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from lifelines.plotting import add_at_risk_counts
from lifelines.utils import median_survival_times
from matplotlib import pyplot as plt

from services.followup.study.survival import kaplan_meier

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.0, abs_tol=1e-9)


def log_log_bounds(s: float, greenwood_sum: float, z: float = Z95) -> tuple[float, float]:
    v = math.log(s)
    return (
        math.exp(-math.exp(math.log(-v) - z * math.sqrt(greenwood_sum) / v)),
        math.exp(-math.exp(math.log(-v) + z * math.sqrt(greenwood_sum) / v)),
    )


# --- hand-worked examples -----------------------------------------------------------------------------

T10 = [1, 2, 2, 3, 4, 4, 5, 7, 7, 9]
E10 = [True, True, False, True, False, True, True, False, True, False]


def test_table_of_a_small_cohort_worked_by_hand():
    km = kaplan_meier(T10, E10)
    assert km.times == (0, 1, 2, 3, 4, 5, 7, 9)
    assert km.at_risk == (10, 10, 9, 7, 6, 4, 3, 1)
    assert km.events == (0, 1, 1, 1, 1, 1, 1, 0)
    assert km.censored == (0, 0, 1, 0, 1, 0, 1, 1)
    expected_s = [1, 9 / 10, 8 / 10, 8 / 10 * 6 / 7, 8 / 10 * 6 / 7 * 5 / 6, 8 / 10 * 6 / 7 * 5 / 6 * 3 / 4]
    expected_s += [expected_s[-1] * 2 / 3] * 2
    assert all(close(a, b) for a, b in zip(km.survival, expected_s, strict=True))
    # Greenwood: sum of d / (n (n - d)) over the event times
    terms = [0, 1 / 90, 1 / 72, 1 / 42, 1 / 30, 1 / 12, 1 / 6, 0]
    sums = [sum(terms[: i + 1]) for i in range(len(terms))]
    assert all(close(a, b) for a, b in zip(km.greenwood_sum, sums, strict=True))
    assert all(close(v, s * s * g) for v, s, g in zip(km.variance, expected_s, sums, strict=True))
    assert close(km.variance[1], 0.9**2 / 90)  # = S(1 - S) / n before any censoring
    for i in range(1, len(km.times)):
        lower, upper = log_log_bounds(expected_s[i], sums[i])
        assert close(km.ci_lower[i], lower) and close(km.ci_upper[i], upper)
    assert km.ci_lower[0] == km.ci_upper[0] == 1.0
    assert close(km.ci_lower[1], 0.4730092713620505) and close(km.ci_upper[1], 0.9852813933673431)


def test_median_and_its_confidence_interval_by_hand():
    km = kaplan_meier(T10, E10)
    assert km.median() == 5  # S(4) = 0.571 > 0.5, S(5) = 0.429
    # lower bound is 0.473 <= 0.5 already at t=1; the upper bound never gets to 0.5 (0.601 at the end)
    assert km.median_ci() == (1, None)


def test_step_function_is_right_continuous_and_flat_after_the_last_time():
    km = kaplan_meier(T10, E10)
    assert km.survival_at(0.999) == 1.0
    assert km.survival_at(1) == pytest.approx(0.9)
    assert km.survival_at(1.5) == pytest.approx(0.9)
    assert km.survival_at(100) == km.survival[-1]
    assert km.survival_at(-1) == 1.0  # before day 0 nobody has had the event (lifelines: NaN)
    assert km.ci_at(1.5) == (km.ci_lower[1], km.ci_upper[1])
    assert km.ci_at(-1) == (1.0, 1.0)


def test_at_risk_counts_subjects_still_followed_after_t():
    km = kaplan_meier(T10, E10)
    # lifelines' plot convention: durations > t (subjects ending exactly at t are no longer counted)
    assert [km.at_risk_at(t) for t in (0, 1, 1.5, 2, 8, 9, 10)] == [10, 9, 9, 7, 1, 0, 0]
    assert km.at_risk_at(-1) == 0


def test_single_event_drops_to_zero_with_degenerate_interval():
    km = kaplan_meier([3], [True])
    assert km.times == (0, 3)
    assert km.survival == (1.0, 0.0)
    assert km.greenwood_sum == (0.0, 0.0)  # the infinite n == d term counts as 0, as in lifelines
    assert km.variance == (0.0, 0.0)
    assert (km.ci_lower, km.ci_upper) == ((1.0, 0.0), (1.0, 0.0))
    assert km.median() == 3
    assert km.median_ci() == (3, 3)


def test_all_censored_never_reaches_the_median():
    km = kaplan_meier([2, 5, 5], [False, False, False])
    assert km.survival == (1.0, 1.0, 1.0)
    assert km.ci_lower == km.ci_upper == (1.0, 1.0, 1.0)
    assert km.median() is None
    assert km.median_ci() == (None, None)


def test_events_and_censoring_at_time_zero():
    km = kaplan_meier([0, 0, 1, 2], [True, False, True, False])
    assert km.times == (0, 1, 2)
    assert km.at_risk == (4, 2, 1)
    assert (km.events, km.censored) == ((1, 1, 0), (1, 0, 1))
    assert km.survival[0] == pytest.approx(3 / 4)
    assert km.survival[1] == pytest.approx(3 / 4 * 1 / 2)
    assert km.at_risk_at(0) == 2


def test_median_when_survival_is_exactly_one_half():
    # exp(log 1 - log 2) need not be exactly 0.5 in floating point; the definition says S <= 0.5
    assert kaplan_meier([1, 2], [True, True]).median() == 1
    assert kaplan_meier([1, 1, 2, 3, 4, 5], [True, True, True, False, True, False]).median() == 2


def test_alpha_sets_the_width_of_the_interval():
    narrow, wide = kaplan_meier(T10, E10, alpha=0.2), kaplan_meier(T10, E10, alpha=0.05)
    z80 = 1.2815515655446004
    assert close(narrow.ci_lower[3], log_log_bounds(narrow.survival[3], narrow.greenwood_sum[3], z80)[0])
    assert wide.ci_lower[3] < narrow.ci_lower[3] < narrow.survival[3] < narrow.ci_upper[3] < wide.ci_upper[3]


@pytest.mark.parametrize(
    ("durations", "observed"),
    [([], []), ([1, 2], [True]), ([-1], [True]), ([math.nan], [True]), ([math.inf], [False])],
)
def test_rejects_invalid_input(durations, observed):
    with pytest.raises(ValueError):
        kaplan_meier(durations, observed)


def test_json_carries_the_table_but_not_the_exact_fractions():
    km = kaplan_meier(T10, E10)
    dumped = km.model_dump(mode="json")
    assert "survival_exact" not in dumped and "survival_exact" not in km.model_dump_json()
    assert dumped["times"] == [0, 1, 2, 3, 4, 5, 7, 9]
    assert km.survival_exact[2] == Fraction(8, 10)


# --- against lifelines ----------------------------------------------------------------------------------


def lifelines_at_risk(kmf: KaplanMeierFitter, tick: float, table=None) -> int:
    """lifelines.plotting.add_at_risk_counts' default computation (at_risk_count_from_start_of_period=False)."""
    if table is None:
        table = kmf.event_table.assign(at_risk=lambda x: x.at_risk - x.removed)
    rows = table.loc[:tick]
    return 0 if rows.empty else int(rows["at_risk"].iloc[-1])


def test_at_risk_replica_is_what_lifelines_draws_under_the_plot():
    durations, observed = [0, 4, 4, 8, 8, 9, 12, 14, 20, 20], [0, 1, 0, 1, 1, 0, 1, 0, 1, 1]
    kmf = KaplanMeierFitter().fit(durations, observed)
    ticks = [0, 4, 6, 8, 12, 16, 20, 24]
    fig, ax = plt.subplots()
    try:
        kmf.plot_survival_function(ax=ax)
        add_at_risk_counts(kmf, ax=ax, xticks=ticks, rows_to_show=["At risk"])
        counts = [int(re.search(r"(\d+)\s*$", label.get_text()).group(1)) for label in fig.axes[-1].get_xticklabels()]
    finally:
        plt.close(fig)
    km = kaplan_meier(durations, [bool(e) for e in observed])
    assert counts == [lifelines_at_risk(kmf, t) for t in ticks] == [km.at_risk_at(t) for t in ticks]
    assert counts == [9, 7, 7, 5, 3, 2, 0, 0]  # durations > tick


def test_censored_and_events_replicas_are_the_rows_lifelines_draws_under_the_plot():
    durations, observed = [0, 4, 4, 8, 8, 9, 12, 14, 20, 20], [0, 1, 0, 1, 1, 0, 1, 0, 1, 1]
    kmf = KaplanMeierFitter().fit(durations, observed)
    ticks = [-1, 0, 4, 6, 8, 12, 16, 20, 24]
    fig, ax = plt.subplots()
    try:
        kmf.plot_survival_function(ax=ax)
        add_at_risk_counts(kmf, ax=ax, xticks=ticks, rows_to_show=["Censored", "Events"])
        rows = [re.findall(r"\d+", label.get_text())[-2:] for label in fig.axes[-1].get_xticklabels()]
    finally:
        plt.close(fig)
    km = kaplan_meier(durations, [bool(e) for e in observed])
    assert [[int(c), int(e)] for c, e in rows] == [[km.censored_by(t), km.events_by(t)] for t in ticks]
    assert [km.censored_by(t) for t in ticks] == [0, 1, 2, 2, 2, 3, 4, 4, 4]  # ended at or before the tick


def exact_survival(kmf: KaplanMeierFitter) -> list[Fraction]:
    s, result = Fraction(1), []
    for n, d in zip(kmf.event_table["at_risk"], kmf.event_table["observed"], strict=True):
        s *= Fraction(int(n) - int(d), int(n))
        result.append(s)
    return result


def assert_median_matches(ours: float | None, kmf: KaplanMeierFitter) -> None:
    theirs = kmf.median_survival_time_
    times = list(kmf.event_table.index)
    exact = exact_survival(kmf)
    if Fraction(1, 2) in exact:
        # S is exactly 1/2 at some time: lifelines' exp(sum(log)) lands a rounding error above or below
        # 0.5, so it reports that time or the next one with S < 1/2. We report that time, as defined.
        at_half = times[exact.index(Fraction(1, 2))]
        after = next((t for t, s in zip(times, exact, strict=True) if s < Fraction(1, 2)), math.inf)
        assert ours == at_half
        assert theirs in (at_half, after)
    elif math.isinf(theirs):
        assert ours is None
    else:
        assert ours is not None and close(ours, theirs)


def as_float(x: float | None) -> float:
    return math.inf if x is None else x


def assert_matches_lifelines(durations: list[float], observed: list[bool], alpha: float) -> None:
    km = kaplan_meier(durations, observed, alpha=alpha)
    kmf = KaplanMeierFitter(alpha=alpha).fit(durations, observed)
    table = kmf.event_table

    assert list(km.times) == list(table.index)
    assert list(km.at_risk) == list(table["at_risk"])
    assert list(km.events) == list(table["observed"])
    assert list(km.censored) == list(table["censored"])

    survival = kmf.survival_function_.iloc[:, 0].tolist()
    lower, upper = (kmf.confidence_interval_.iloc[:, j].tolist() for j in (0, 1))
    greenwood, running = [], 0.0  # Greenwood from lifelines' own event table; n == d term is 0
    for n, d in zip(table["at_risk"], table["observed"], strict=True):
        running += d / (n * (n - d)) if n > d else 0.0
        greenwood.append(running)
    for i in range(len(km.times)):
        assert close(km.survival[i], survival[i])
        assert close(km.greenwood_sum[i], greenwood[i])
        assert close(km.greenwood_sum[i], kmf._cumulative_sq_.iloc[i])  # what lifelines' CI actually uses
        assert close(km.variance[i], survival[i] ** 2 * greenwood[i])
        assert close(km.ci_lower[i], lower[i]) and close(km.ci_upper[i], upper[i])

    probes = sorted({*km.times, *(t + 0.5 for t in km.times), *range(0, 64, 4)})
    for t, s in zip(probes, kmf.predict(probes), strict=True):
        assert close(km.survival_at(t), s)
    at_risk_table = kmf.event_table.assign(at_risk=lambda x: x.at_risk - x.removed)
    for t in probes:
        assert km.at_risk_at(t) == lifelines_at_risk(kmf, t, at_risk_table)
    assert math.isnan(kmf.predict(-1.0)) and km.survival_at(-1.0) == 1.0  # explicit divergence before 0

    assert_median_matches(km.median(), kmf)
    ci = median_survival_times(kmf.confidence_interval_)
    ours_lower, ours_upper = km.median_ci()
    assert as_float(ours_lower) == ci.iloc[0, 0]  # both are table times (or inf): exact equality
    assert as_float(ours_upper) == ci.iloc[0, 1]


cohorts = st.integers(min_value=1, max_value=60).flatmap(
    lambda n: st.tuples(
        st.lists(
            st.one_of(st.integers(0, 40), st.sampled_from([0.5, 2.25, 7.5, 13.75])),  # few values: many ties
            min_size=n,
            max_size=n,
        ),
        st.one_of(
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.just([True] * n),  # all events
            st.just([False] * n),  # all censored
        ),
    )
)


@settings(max_examples=200, deadline=None, database=None)  # no .hypothesis/ left in the repo
@given(cohort=cohorts, alpha=st.sampled_from([0.05, 0.05, 0.1, 0.2]))
@example(cohort=([1, 2], [True, True]), alpha=0.05)  # S exactly 0.5, then 0
@example(cohort=([0, 0, 0], [True, True, True]), alpha=0.05)  # everything at time 0
@example(cohort=([5], [False]), alpha=0.05)
def test_agrees_with_lifelines(cohort, alpha):
    durations, observed = cohort
    assert_matches_lifelines(durations, observed, alpha)
