"""The Study page's pure pieces: the Kaplan-Meier drawing (steps at the event days, the band between the
confidence bounds, ticks at the censored days) on a hand-made table, and the CRS/ICANS grade of a day."""

from __future__ import annotations

from datetime import date, timedelta
from uuid import uuid4

from services.followup.dashboard import km
from services.followup.dashboard.study import grade_on_day, heat_map
from services.followup.projections.journey import AdverseEvent, AEUpdate, Journey
from services.followup.study.survival import kaplan_meier
from shared.contract.events import AEFields

# Five subjects: events on days 10 and 30, censored on days 20 and 40, and one followed past week 24.
DAYS, EVENTS = [10, 20, 30, 40, 200], [True, False, True, False, True]
TABLE = kaplan_meier(DAYS, EVENTS)


def test_the_curve_steps_down_at_each_event_day_and_nowhere_else():
    c = km.curve(TABLE, "OS", "censored")
    x, y = km.x_of, km.y_of
    # S: 1 -> 0.8 at day 10; 0.8 * 2/3 at day 30; the event at day 200 lies past week 24 (cut there).
    s10, s30 = 0.8, 0.8 * 2 / 3
    assert c.steps == [
        (x(0), y(1)),
        (x(10), y(1)),
        (x(10), y(s10)),
        (x(20), y(s10)),  # a censoring: a corner, no drop
        (x(30), y(s10)),
        (x(30), y(s30)),
        (x(40), y(s30)),
        (x(168), y(s30)),  # cut at week 24, at the value before the day-200 event
    ]
    drops = [a[0] for a, b in zip(c.steps, c.steps[1:], strict=False) if a[0] == b[0] and a[1] != b[1]]
    assert drops == [x(10), x(30)]
    assert c.path.startswith(f"M{x(0):g},{y(1):g} L")


def test_the_band_runs_along_the_upper_bound_and_back_along_the_lower():
    c = km.curve(TABLE, "OS", "censored")
    half = len(c.band) // 2
    upper, lower = c.band[:half], c.band[half:][::-1]
    assert [p[0] for p in upper] == [p[0] for p in lower]  # the same days both ways
    row = TABLE.times.index(30.0)
    assert (km.x_of(30), km.y_of(TABLE.ci_upper[row])) in upper
    assert (km.x_of(30), km.y_of(TABLE.ci_lower[row])) in lower
    # In SVG y grows downwards: the upper bound is never below the lower bound, and the curve lies between.
    assert all(u[1] <= lo[1] for u, lo in zip(upper, lower, strict=True))
    assert TABLE.ci_lower[row] < TABLE.survival[row] < TABLE.ci_upper[row]
    assert c.band_path.endswith(" Z")


def test_a_tick_marks_each_censored_day_on_the_curve():
    c = km.curve(TABLE, "OS", "censored")
    s10, s30 = 0.8, 0.8 * 2 / 3
    assert c.ticks == [(km.x_of(20), km.y_of(s10)), (km.x_of(40), km.y_of(s30))]


def test_axes_run_from_week_0_to_24_and_from_0_to_100_percent():
    chart = km.chart([km.curve(TABLE, "OS", "censored")])
    assert [label for _, label in chart.x_ticks] == ["0", "4", "8", "12", "16", "20", "24"]
    left, top, right, bottom = chart.plot
    assert chart.x_ticks[0][0] == left and chart.x_ticks[-1][0] == right
    assert chart.y(1.0) == top and chart.y(0.0) == bottom
    assert [label for _, label in chart.y_ticks] == ["0 %", "25 %", "50 %", "75 %", "100 %"]


def test_no_subjects_draws_nothing():
    c = km.curve(None, "DOR", "censored")
    assert (c.steps, c.band, c.ticks, c.band_path) == ([], [], [], "")


INFUSED = date(2026, 1, 10)


def _ae(category: str, onset_day: int, grade: int, *updates: AEUpdate) -> AdverseEvent:
    report = AEFields(
        term=category,
        category=category,
        grade=grade,
        serious=False,
        relatedness="probable",
        aware_at="2026-01-10T09:00:00Z",
    )
    return AdverseEvent(
        ae_id=uuid4(), report=report, onset_on=INFUSED + timedelta(days=onset_day), updates=list(updates)
    )


def _on(day: int) -> date:
    return INFUSED + timedelta(days=day)


def test_a_day_has_the_grade_carried_into_it_and_every_grade_reached_that_day():
    ae = _ae(
        "CRS",
        1,
        1,
        AEUpdate(on=_on(3), grade=3),
        AEUpdate(on=_on(5), grade=1),
        AEUpdate(on=_on(7), outcome="recovered"),
    )
    as_of = _on(40)
    assert [grade_on_day(ae, _on(d), as_of) for d in range(10)] == [0, 1, 1, 3, 3, 3, 1, 1, 0, 0]
    # Known on day 4: the downgrade of day 5 is not known yet, nor anything after the cut-off.
    assert [grade_on_day(ae, _on(d), _on(4)) for d in range(7)] == [0, 1, 1, 3, 3, 0, 0]


def test_the_heat_map_takes_the_worst_subject_each_day_over_the_days_followed():
    one = Journey(subject_id="S-1", site_id="01", infused_at=f"{INFUSED}T10:00:00Z", lymphodepletion_days=[_on(-4)])
    one.adverse_events = {"a": _ae("CRS", 2, 2, AEUpdate(on=_on(4), outcome="recovered"))}
    two = Journey(subject_id="S-2", site_id="01", infused_at=f"{_on(20)}T10:00:00Z", died_on=_on(25))
    two.adverse_events = {"b": _ae("ICANS", 21, 4)}  # study day 1 of the second subject
    never = Journey(subject_id="S-3", site_id="01")  # not infused: outside the population
    heat = heat_map([one, two, never], _on(27), 28)
    assert heat.worst["CRS"][:6] == [0, 0, 2, 2, 2, 0]
    assert heat.worst["ICANS"][:3] == [0, 4, 4]  # the second subject's, never recovered
    assert heat.worst["ICANS"][5] == 4 and heat.worst["ICANS"][6] == 0  # the second died on its day 5
    # Day 27 is the first subject's last day known; the second died on its day 5.
    assert heat.followed[:6] == [2] * 6 and heat.followed[6:28] == [1] * 22 and heat.followed[28] == 0
    assert heat.worst["CRS"][28] is None
