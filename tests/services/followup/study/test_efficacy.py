"""Efficacy endpoints: ORR denominators, OS/PFS/DOR definitions and censoring, and the summary table."""

import json
import math
from datetime import date, timedelta

import pytest
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times

from services.followup.projections.journey import KnownAlive
from services.followup.study.efficacy import (
    dor_times,
    duration_of_remission,
    efficacy_table,
    objective_response,
    os_times,
    overall_survival,
    pfs_times,
    progression_free_survival,
)
from services.followup.study.inputs import Assessment, SubjectOutcome

D0 = date(2025, 1, 6)
AS_OF = D0 + timedelta(days=400)


def on(day: int) -> date:
    return D0 + timedelta(days=day)


def subject(sid, *responses, death=None, contact=None, lost=None, subsequent=None) -> SubjectOutcome:
    """responses: (timepoint, response, study day); contact: a day seen alive; lost: (last contact, day the
    loss to follow-up was declared); other dates as study days."""
    known_alive = ([KnownAlive(on(contact), on(contact))] if contact is not None else []) + (
        [KnownAlive(on(lost[0]), on(lost[1]))] if lost is not None else []
    )
    return SubjectOutcome(
        subject_id=sid,
        infused_on=D0,
        assessments=tuple(Assessment(timepoint=tp, response=r, assessed_on=on(d)) for tp, r, d in responses),
        died_on=None if death is None else on(death),
        known_alive=tuple(known_alive),
        subsequent_therapy_on=None if subsequent is None else on(subsequent),
    )


def days(times) -> list[tuple[int, bool]]:
    return [(t.days, t.event) for t in times]


# --- ORR ------------------------------------------------------------------------------------------------


def test_orr_is_cr_plus_cri_over_every_infused_subject():
    cohort = [
        subject("A", ("W4", "CR", 28), ("W8", "CR", 56)),
        subject("B", ("W4", "CRi", 29), ("W8", "RELAPSE", 55)),
        subject("C", ("W4", "NR", 27)),
        subject("D", death=12),  # never assessed: in the denominator, not the numerator
        subject("E", ("UNSCHEDULED", "CR", 20)),  # a CR outside the W4 visit is not a W4 response
    ]
    w4 = objective_response(cohort, "W4")
    assert (w4.numerator, w4.denominator, w4.rate) == (2, 5, 0.4)
    assert "N=5" in w4.denominator_definition and "infused" in w4.denominator_definition
    w8 = objective_response(cohort, "W8")
    assert (w8.numerator, w8.denominator) == (1, 5)
    assert objective_response(cohort, "W12").numerator == 0


def test_orr_takes_the_latest_assessment_at_a_timepoint():
    confirmed_later = subject("A", ("W4", "NR", 26), ("W4", "CRi", 33))
    lost_on_reassessment = subject("B", ("W4", "CR", 27), ("W4", "NR", 34))
    assert objective_response([confirmed_later], "W4").numerator == 1
    assert objective_response([lost_on_reassessment], "W4").numerator == 0


def test_orr_without_subjects_has_no_rate():
    result = objective_response([], "W4")
    assert (result.numerator, result.denominator, result.rate) == (0, 0, None)


# --- OS -------------------------------------------------------------------------------------------------


def test_os_event_is_death_and_censoring_is_the_last_known_alive_date():
    cohort = [
        subject("died", ("W4", "CR", 28), death=150, contact=140),
        subject("contact", ("W4", "CR", 28), contact=200),
        # no contact recorded: the last date we saw the subject alive, not the cut-off
        subject("no-contact", ("W4", "CR", 28), ("W8", "CR", 57), ("UNSCHEDULED", "RELAPSE", 70)),
        # Seen alive, or dead, only after the cut-off: not known on it, so censored at the last date known
        # alive by then (these two were censored at the cut-off itself before: an extrapolation).
        subject("contact-after-cutoff", contact=450),
        subject("died-after-cutoff", contact=120, death=420),
        subject("lost", ("W4", "CR", 28), lost=(300, 350)),  # the declared last contact, known from day 350
        subject("lost-after-cutoff", ("W4", "CR", 28), lost=(390, 410)),  # declared after the cut-off
    ]
    assert days(os_times(cohort, False, AS_OF)) == [
        (150, True),
        (200, False),
        (70, False),
        (0, False),
        (120, False),
        (300, False),
        (28, False),
    ]


def test_os_censoring_at_subsequent_therapy():
    cohort = [
        subject("hsct-then-death", death=180, subsequent=70),
        subject("same-day", death=90, subsequent=90),  # the event counts when it is not preceded
        subject("hsct-alive", contact=300, subsequent=100),
        subject("hsct-after-contact", contact=100, subsequent=100),
    ]
    assert days(os_times(cohort, False, AS_OF)) == [(180, True), (90, True), (300, False), (100, False)]
    assert days(os_times(cohort, True, AS_OF)) == [(70, False), (90, True), (100, False), (100, False)]
    on_, off = overall_survival(cohort, True, AS_OF), overall_survival(cohort, False, AS_OF)
    assert (on_.n, on_.events, on_.censored, on_.censor_at_subsequent_therapy) == (4, 1, 3, True)
    assert (off.n, off.events, off.censored, off.censor_at_subsequent_therapy) == (4, 2, 2, False)


def test_subject_infused_after_the_cutoff_is_rejected():
    late = SubjectOutcome(subject_id="late", infused_on=AS_OF + timedelta(days=1))
    with pytest.raises(ValueError, match="after the cut-off"):
        overall_survival([late], False, AS_OF)


# --- PFS ------------------------------------------------------------------------------------------------


def test_pfs_event_is_progression_or_death_whichever_first_censored_at_last_assessment():
    cohort = [
        subject("relapse", ("W4", "CR", 28), ("W8", "RELAPSE", 60), death=200),
        subject("death", ("W4", "CR", 28), death=45, contact=40),
        subject("censored", ("W4", "CR", 28), ("W12", "CR", 85), contact=300),  # last assessment, not contact
        subject("never-assessed", contact=30),
        subject(
            "relapse-after-cutoff",
            ("W4", "CR", 28),
            ("W12", "CR", 84),
            ("UNSCHEDULED", "CR", 399),
            ("M12", "RELAPSE", 410),
        ),
        subject("assessed-after-cutoff", ("W4", "NR", 28), ("UNSCHEDULED", "NR", 401)),
        subject("progressive-disease", ("W4", "NR", 28), ("W8", "PD", 56), ("W12", "PD", 84)),
        subject("long-term", ("W4", "CR", 28), ("W12", "CR", 84), ("M6", "CR", 182), ("M9", "CR", 273)),
    ]
    assert days(pfs_times(cohort, False, AS_OF)) == [
        (60, True),
        (45, True),
        (85, False),
        (0, False),
        (399, False),
        (28, False),
        (56, True),  # the first progression
        (273, False),  # month 6-12 assessments are disease assessments too
    ]


def test_pfs_censoring_at_subsequent_therapy():
    cohort = [
        subject(
            "hsct-then-relapse", ("W4", "CR", 28), ("W12", "CR", 84), ("UNSCHEDULED", "RELAPSE", 200), subsequent=100
        ),
        subject("hsct-no-event", ("W4", "CR", 28), ("W12", "CR", 84), subsequent=60),
        subject("hsct-after-last-assessment", ("W4", "CR", 28), subsequent=60),
    ]
    assert days(pfs_times(cohort, False, AS_OF)) == [(200, True), (84, False), (28, False)]
    assert days(pfs_times(cohort, True, AS_OF)) == [(100, False), (60, False), (28, False)]
    assert progression_free_survival(cohort, True, AS_OF).events == 0
    assert progression_free_survival(cohort, False, AS_OF).events == 1


# --- DOR ------------------------------------------------------------------------------------------------


def test_dor_counts_responders_only_from_their_first_cr_or_cri():
    cohort = [
        subject("late-responder", ("W4", "NR", 28), ("W8", "CRi", 56), ("W12", "RELAPSE", 90)),
        subject("death-in-remission", ("W4", "CR", 28), death=100),
        subject("ongoing", ("W4", "CR", 30), ("W8", "CR", 58), ("W12", "CR", 86), contact=380),
        subject("refractory", ("W4", "NR", 28), ("UNSCHEDULED", "PD", 50), death=70),
        subject("never-assessed", death=10),
    ]
    assert days(dor_times(cohort, False, AS_OF)) == [(34, True), (72, True), (56, False)]
    summary = duration_of_remission(cohort, False, AS_OF)
    assert (summary.n, summary.events, summary.censored) == (3, 2, 1)


def test_dor_censoring_at_subsequent_therapy():
    cohort = [
        subject("hsct-in-remission", ("W4", "CR", 28), ("W12", "CR", 84), ("M9", "RELAPSE", 250), subsequent=100),
        subject("hsct-before-response", ("W4", "NR", 28), ("W8", "CR", 56), subsequent=40),
    ]
    assert days(dor_times(cohort, False, AS_OF)) == [(222, True), (0, False)]
    # subsequent therapy before the response began leaves no follow-up: censored at day 0
    assert days(dor_times(cohort, True, AS_OF)) == [(72, False), (0, False)]


def test_dor_ends_at_the_first_relapse_after_the_first_remission():
    # Progressive disease before a late remission ends PFS, not the remission that came after it.
    late = subject("late", ("W4", "NR", 28), ("UNSCHEDULED", "PD", 40), ("W8", "CR", 56), ("W12", "RELAPSE", 84))
    assert days(dor_times([late], False, AS_OF)) == [(28, True)]
    assert days(pfs_times([late], False, AS_OF)) == [(40, True)]


def test_dor_without_responders_is_empty_not_an_error():
    summary = duration_of_remission([subject("nr", ("W4", "NR", 28))], True, AS_OF)
    assert (summary.n, summary.events, summary.km, summary.median_days) == (0, 0, None, None)
    assert (summary.week_12.estimable, summary.week_12.survival, summary.week_12.reason) == (
        False,
        None,
        "no subjects to estimate from",
    )
    assert [(a.at_risk, a.censored, a.events) for a in summary.at_risk] == [(0, 0, 0)] * 7


# --- summaries and lifelines ----------------------------------------------------------------------------

OS_COHORT = [
    subject("s01", death=40),
    subject("s02", ("W4", "CR", 28), death=95),
    subject("s03", ("W4", "CR", 28), contact=200),
    subject("s04", ("W4", "CRi", 28), death=150),
    subject("s05", contact=60),
    subject("s06", ("W4", "NR", 28), death=95),
    subject("s07", ("W4", "CR", 28), ("W12", "CR", 84)),
    subject("s08", ("W4", "CR", 28), death=300),
    subject("s09", ("W4", "CR", 28), contact=365),
    subject("s10", death=20),
    subject("s11", ("W4", "CR", 28), subsequent=70, death=180),
    subject("s12", ("W4", "CR", 28), contact=160, death=420),  # censored on day 160: the death is after the cut-off
]
OS_DAYS_OFF = [40, 95, 200, 150, 60, 95, 84, 300, 365, 20, 180, 160]
OS_EVENT_OFF = [True, True, False, True, False, True, False, True, False, True, True, False]


@pytest.mark.parametrize("censor", [False, True])
def test_os_summary_agrees_with_lifelines_on_the_same_durations(censor):
    expected_days, expected_events = list(OS_DAYS_OFF), list(OS_EVENT_OFF)
    if censor:
        expected_days[10], expected_events[10] = 70, False
    assert days(os_times(OS_COHORT, censor, AS_OF)) == list(zip(expected_days, expected_events, strict=True))

    summary = overall_survival(OS_COHORT, censor, AS_OF)
    kmf = KaplanMeierFitter().fit(expected_days, expected_events)
    assert summary.median_days == kmf.median_survival_time_  # 180 / 150: both reached, exact table times
    ci = median_survival_times(kmf.confidence_interval_)
    assert summary.median_ci_lower == ci.iloc[0, 0]
    assert (summary.median_ci_upper is None) == math.isinf(ci.iloc[0, 1])
    for point in (summary.week_12, summary.week_24):
        assert math.isclose(point.survival, float(kmf.predict(point.day)), abs_tol=1e-9)
        lower, upper = kmf.confidence_interval_.asof(point.day)
        assert math.isclose(point.ci_lower, lower, abs_tol=1e-9)
        assert math.isclose(point.ci_upper, upper, abs_tol=1e-9)
    assert (summary.week_12.day, summary.week_24.day) == (84, 168)
    assert summary.n == 12 and summary.events == sum(expected_events)


def test_numbers_at_risk_by_week():
    summary = overall_survival(OS_COHORT, False, AS_OF)
    # At risk: durations > the week's day (lifelines' convention under its plots; s07 ends on day 84
    # exactly); censored and events: those ending by the day, as in the rows lifelines adds below.
    assert [(a.week, a.day, a.at_risk, a.censored, a.events) for a in summary.at_risk] == [
        (0, 0, 12, 0, 0),
        (4, 28, 11, 0, 1),
        (8, 56, 10, 0, 2),
        (12, 84, 8, 2, 2),
        (16, 112, 6, 2, 4),
        (20, 140, 6, 2, 4),
        (24, 168, 4, 3, 5),
    ]
    assert (summary.week_24.at_risk, summary.week_24.estimable, summary.week_24.reason) == (4, True, None)


def test_survival_past_the_last_follow_up_is_not_estimable_unless_the_curve_is_at_zero():
    short = overall_survival([subject("a", contact=120), subject("b", death=30)], False, AS_OF)
    assert (short.week_12.estimable, short.week_12.survival) == (True, 0.5)
    w24 = short.week_24
    assert (w24.day, w24.estimable, w24.survival, w24.ci_lower, w24.ci_upper, w24.at_risk) == (
        168,
        False,
        None,
        None,
        None,
        0,
    )
    assert w24.reason == "no subject remains at risk at day 168: the longest follow-up is 120 days (censored)"
    reaching = overall_survival([subject("a", contact=168), subject("b", death=30)], False, AS_OF)
    assert (reaching.week_24.estimable, reaching.week_24.survival, reaching.week_24.at_risk) == (True, 0.5, 0)
    all_dead = overall_survival([subject("a", death=50), subject("b", death=30)], False, AS_OF)
    assert all_dead.week_12.survival == 0.0 and all_dead.week_24.ci_upper == 0.0
    assert all_dead.week_24.estimable and all_dead.week_24.reason is None


def test_efficacy_table_reports_every_endpoint_both_ways_and_serialises():
    cohort = [
        *OS_COHORT,
        # W12 response assessed after the cut-off does not count for ORR
        subject("s13", ("W4", "NR", 28), ("W12", "CR", 401)),
    ]
    table = efficacy_table(cohort, AS_OF)
    assert table.subjects_infused == 13
    assert [(r.timepoint, r.numerator, r.denominator) for r in table.orr] == [
        ("W4", 8, 13),
        ("W8", 0, 13),
        ("W12", 1, 13),
    ]
    assert table.os.not_censored_at_subsequent_therapy.events == 7
    assert table.os.censored_at_subsequent_therapy.events == 6
    assert table.os.censored_at_subsequent_therapy.censor_at_subsequent_therapy is True
    assert table.pfs.not_censored_at_subsequent_therapy.endpoint == "PFS"
    assert table.dor.not_censored_at_subsequent_therapy.n == 8  # responders known on the cut-off only
    dumped = json.loads(table.model_dump_json())
    assert dumped["os"]["not_censored_at_subsequent_therapy"]["km"]["times"][0] == 0.0
    assert "survival_exact" not in table.model_dump_json()
