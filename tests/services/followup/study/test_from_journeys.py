"""From journeys to the per-subject study summaries: DLTs by the protocol's rules, DLT evaluability, and the
efficacy outcome as known on a date."""

from datetime import UTC, date, datetime, timedelta
from functools import reduce
from uuid import uuid4

import pytest

from services.followup.projections.journey import AdverseEvent, AEUpdate, Journey, KnownAlive, apply
from services.followup.study.efficacy import last_known_alive
from services.followup.study.from_journeys import is_dlt, outcome, safety
from services.followup.study.inputs import Assessment
from shared.contract.envelope import Envelope
from shared.contract.events import (
    AEFields,
    AEReported,
    AEUpdated,
    AgentDose,
    ConsentWithdrawn,
    Enrolled,
    InfusionCorrected,
    LostToFollowUp,
    LymphodepletionGiven,
    Payload,
    ResponseAssessed,
    SubjectDied,
    SubsequentTherapyStarted,
    SurvivalStatusRecorded,
    UCARTInfused,
    VisitCompleted,
)
from shared.protocol import DLTRule, load_protocol
from tests.services.followup.envelopes import envelope as recorded

PROTOCOL = load_protocol()  # DLT: CRS or ICANS grade >= 3, days 0-28, relatedness possible or more
SUBJECT = "UCT-07-002"
DAY0 = date(2025, 5, 5)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def at(on: date, hour: int = 10) -> datetime:
    return datetime(on.year, on.month, on.day, hour, tzinfo=UTC)


def envelope(payload: Payload, on: date) -> Envelope:
    return recorded(payload, at(on), subject_id=SUBJECT, recorded_at=at(on, 11))


def journey(*events: tuple[Payload, date], infused: bool = True) -> Journey:
    history = [
        (
            Enrolled(
                site_id="07",
                consent_signed_on=day(-14),
                year_of_birth=1988,
                sex="M",
                disease_status="refractory",
                cd19_positive=True,
            ),
            day(-12),
        ),
        *(
            (LymphodepletionGiven(agents=(AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),)), day(n))
            for n in (-5, -4, -3)
        ),
    ]
    if infused:
        history.append((UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="L", donor_id="D"), DAY0))
    return reduce(lambda j, e: apply(j, envelope(*e), e[0]), [*history, *events], Journey(subject_id=SUBJECT))


def fields(**changes) -> dict:
    return {
        "term": "CRS",
        "category": "CRS",
        "grade": 3,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(DAY0, 12),
    } | changes


def adverse_event(onset: int = 5, *grades: tuple[int, int], **changes) -> AdverseEvent:
    """grades: later (grade, study day) updates."""
    updates = [AEUpdate(on=day(on), grade=grade) for grade, on in grades]
    return AdverseEvent(ae_id=uuid4(), report=AEFields(**fields(**changes)), onset_on=day(onset), updates=updates)


def reported(onset: int, **changes) -> tuple[Payload, date]:
    return AEReported(**fields(**changes) | {"aware_at": at(day(onset), 12)}), day(onset)


def resp(timepoint: str, result: str, on: int) -> tuple[Payload, date]:
    return ResponseAssessed(
        timepoint=timepoint, response=result, marrow_blasts_pct=40 if result in ("NR", "RELAPSE", "PD") else 1
    ), day(on)


# --- DLT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "dlt"),
    [
        ({}, True),  # CRS grade 3, possible, day 5
        ({"onset": 0}, True),
        ({"onset": 28}, True),  # the window's last day
        ({"onset": 29}, False),
        ({"onset": -1}, False),
        ({"grade": 2}, False),
        ({"grade": 4}, True),
        ({"relatedness": "unlikely"}, False),
        ({"relatedness": "unrelated"}, False),
        ({"relatedness": "definite"}, True),
        ({"category": "ICANS", "term": "ICANS"}, True),
        ({"category": "ICANS", "term": "ICANS", "grade": 2}, False),
        ({"category": "INFECTION", "term": "Sepsis", "grade": 4}, False),
        ({"category": "GVHD", "term": "Skin GvHD", "grade": 4}, False),
    ],
)
def test_dlt_by_the_protocol_rules(changes, dlt):
    assert is_dlt(adverse_event(**changes), DAY0, PROTOCOL) is dlt


def test_the_worst_grade_reached_inside_the_window_decides():
    assert is_dlt(adverse_event(5, (3, 8), (1, 12), grade=2), DAY0, PROTOCOL) is True
    assert is_dlt(adverse_event(5, (3, 29), grade=2), DAY0, PROTOCOL) is False  # worse only after day 28
    assert is_dlt(adverse_event(5, (3, 28), grade=2), DAY0, PROTOCOL) is True
    assert is_dlt(adverse_event(-2, (1, 1), grade=3), DAY0, PROTOCOL) is False  # grade 3 before day 0, then better
    assert is_dlt(adverse_event(-2, (4, 1), grade=3), DAY0, PROTOCOL) is True  # grade 4 reached on day 1


def test_a_dlt_as_of_a_date_counts_the_grades_reached_by_then():
    worsening = adverse_event(5, (3, 8), grade=2)
    assert [is_dlt(worsening, DAY0, PROTOCOL, day(n)) for n in (7, 8, 60)] == [False, True, True]


def test_dlt_rules_come_from_the_protocol():
    with_gvhd = PROTOCOL.model_copy(
        update={
            "dlt": PROTOCOL.dlt.model_copy(
                update={
                    "window_days": 35,
                    "rules": (*PROTOCOL.dlt.rules, DLTRule(category="GVHD", min_grade=2, min_relatedness="unlikely")),
                }
            )
        }
    )
    gvhd = adverse_event(onset=30, category="GVHD", term="Skin GvHD", grade=2, relatedness="unlikely")
    assert (is_dlt(gvhd, DAY0, PROTOCOL), is_dlt(gvhd, DAY0, with_gvhd)) == (False, True)
    assert is_dlt(adverse_event(onset=35), DAY0, with_gvhd) is True


@pytest.mark.parametrize(("as_of", "evaluable"), [(28, False), (29, True)])
def test_dlt_evaluable_once_the_window_has_closed(as_of, evaluable):
    summary = safety(journey(reported(3, grade=2)), PROTOCOL, day(as_of))
    assert (summary.dlt_evaluable, summary.had_dlt) == (evaluable, False)


@pytest.mark.parametrize(
    ("leaving", "left_on", "evaluable"),
    [
        (SubjectDied(primary_cause="disease_progression"), 25, False),  # DOMAIN.md: died before day 28
        (SubjectDied(primary_cause="other"), 28, False),  # not alive through the window's last day
        (ConsentWithdrawn(withdrawal_reason="moved away"), 10, False),
        (LostToFollowUp(last_contact_on=DAY0), 20, False),
        (SubjectDied(primary_cause="disease_progression"), 29, True),  # completed the window, then died
    ],
)
def test_leaving_the_study_inside_the_window_without_a_dlt_is_not_evaluable(leaving, left_on, evaluable):
    j = journey(reported(3, grade=2), (leaving, day(left_on)))
    assert safety(j, PROTOCOL, day(60)).dlt_evaluable is evaluable


def test_a_protocol_that_counts_early_exits_says_so_and_they_count_from_the_day_they_left():
    counting = PROTOCOL.model_copy(update={"dlt": PROTOCOL.dlt.model_copy(update={"early_exit_evaluable": True})})
    j = journey(reported(3, grade=2), (SubjectDied(primary_cause="disease_progression"), day(25)))
    assert safety(j, counting, day(24)).dlt_evaluable is False  # still on study, window open
    assert safety(j, counting, day(25)).dlt_evaluable is True
    assert safety(j, PROTOCOL, day(25)).dlt_evaluable is False


def test_a_dlt_counts_even_when_the_subject_then_left_inside_the_window():
    j = journey(
        reported(10, category="CRS", term="CRS", grade=3), (SubjectDied(primary_cause="adverse_event"), day(12))
    )
    summary = safety(j, PROTOCOL, day(60))
    assert (summary.dlt_evaluable, summary.had_dlt) == (True, True)


def test_dlt_evaluable_as_soon_as_a_dlt_occurred():
    j = journey(reported(10, category="ICANS", term="ICANS", grade=3))
    assert safety(j, PROTOCOL, day(9)).dlt_evaluable is False  # the AE had not started yet
    summary = safety(j, PROTOCOL, day(10))
    assert (summary.dlt_evaluable, summary.had_dlt, len(summary.aes)) == (True, True, 1)


def test_an_update_to_grade_3_makes_a_dlt():
    report, onset = reported(4, grade=2)
    j = journey((report, onset), (AEUpdated(ae_id=report.ae_id, grade=3), day(6)))
    [ae] = safety(j, PROTOCOL, day(10)).aes
    assert (ae.grade, ae.dlt) == (3, True)
    [before] = safety(j, PROTOCOL, day(5)).aes
    assert (before.grade, before.dlt) == (2, False)


def test_a_worsening_after_the_window_raises_the_grade_but_makes_no_dlt():
    report, onset = reported(20, grade=2)
    j = journey((report, onset), (AEUpdated(ae_id=report.ae_id, grade=4), day(35)))
    [ae] = safety(j, PROTOCOL, day(60)).aes
    assert (ae.grade, ae.fatal_or_life_threatening, ae.dlt) == (4, True, False)
    assert safety(j, PROTOCOL, day(60)).dlt_evaluable is True


def test_only_treatment_emergent_aes_are_summarised_and_the_others_counted():
    j = journey(
        reported(-8, category="OTHER", term="Headache", grade=1, relatedness="unrelated"),  # before lymphodepletion
        reported(-4, category="INFECTION", term="Fever", grade=2, relatedness="unrelated"),  # during it
        reported(3, grade=2),
    )
    summary = safety(j, PROTOCOL, day(30))
    assert (sorted(a.category for a in summary.aes), summary.not_treatment_emergent) == (["CRS", "INFECTION"], 1)
    assert safety(j, PROTOCOL, DAY0).aes[0].category == "INFECTION"  # CRS onset on day 3: not yet


def test_safety_summary_of_each_ae():
    j = journey(
        reported(
            2, grade=4, serious=True, seriousness_criteria=("life_threatening",), expected=False, relatedness="probable"
        ),
        reported(40, category="INFECTION", term="Pneumonia", grade=2, relatedness="unrelated"),
    )
    crs, infection = sorted(safety(j, PROTOCOL, day(50)).aes, key=lambda a: a.category)
    assert (
        crs.category,
        crs.grade,
        crs.serious,
        crs.suspected,
        crs.expected,
        crs.fatal_or_life_threatening,
        crs.dlt,
    ) == ("CRS", 4, True, True, False, True, True)
    assert (infection.serious, infection.suspected, infection.expected, infection.dlt) == (False, False, None, False)
    assert [a.category for a in safety(j, PROTOCOL, day(39)).aes] == ["CRS"]  # onset by as_of only


def test_no_safety_summary_before_the_infusion():
    assert safety(journey(infused=False), PROTOCOL, day(30)) is None
    assert safety(journey(), PROTOCOL, day(-1)) is None


# --- efficacy outcome ---------------------------------------------------------------------------


def test_not_infused_is_outside_the_efficacy_population():
    assert outcome(journey(infused=False), day(100)) is None
    assert outcome(journey(), day(-1)) is None
    assert outcome(journey(), DAY0).infused_on == DAY0


def test_outcome_of_a_relapse_after_remission():
    j = journey(
        resp("W4", "CR", 28),
        resp("W8", "CR", 56),
        resp("UNSCHEDULED", "RELAPSE", 70),
        resp("W12", "RELAPSE", 84),
        (SubsequentTherapyStarted(therapy="blinatumomab"), day(75)),
    )
    o = outcome(j, day(100))
    assert (o.subject_id, o.infused_on, o.relapsed_on, o.progressed_on, o.died_on, o.subsequent_therapy_on) == (
        SUBJECT,
        DAY0,
        day(70),
        day(70),
        None,
        day(75),
    )
    assert o.assessments == (
        Assessment("W4", "CR", day(28)),
        Assessment("W8", "CR", day(56)),
        Assessment("UNSCHEDULED", "RELAPSE", day(70)),
        Assessment("W12", "RELAPSE", day(84)),
    )
    assert last_known_alive(o) == day(84)


def test_progressive_disease_is_a_progression_but_no_relapse():
    o = outcome(journey(resp("W4", "NR", 28), resp("W8", "PD", 56), resp("M6", "PD", 180)), day(200))
    assert (o.progressed_on, o.relapsed_on, o.first_remission_on) == (day(56), None, None)
    assert o.assessments[-1] == Assessment("M6", "PD", day(180))


def test_only_what_happened_by_as_of_counts():
    j = journey(
        resp("W4", "CR", 28),
        resp("W8", "RELAPSE", 56),
        (SubsequentTherapyStarted(therapy="allo_hsct"), day(60)),
        (SubjectDied(primary_cause="disease_progression"), day(90)),
    )
    early = outcome(j, day(50))
    assert (early.assessments, early.relapsed_on, early.subsequent_therapy_on, early.died_on) == (
        (Assessment("W4", "CR", day(28)),),
        None,
        None,
        None,
    )
    assert last_known_alive(early) == day(28)  # known alive later, dead later: neither is known on day 50
    late = outcome(j, day(120))
    assert (late.relapsed_on, late.subsequent_therapy_on, late.died_on) == (day(56), day(60), day(90))


def test_the_first_subsequent_therapy_counts():
    j = journey(
        (SubsequentTherapyStarted(therapy="allo_hsct"), day(120)),
        (SubsequentTherapyStarted(therapy="inotuzumab"), day(90)),
    )
    assert outcome(j, day(100)).subsequent_therapy_on == day(90)
    assert outcome(j, day(89)).subsequent_therapy_on is None


def test_known_alive_from_records_contacts_and_a_declared_last_contact():
    seen = journey((VisitCompleted(visit_code="D28"), day(28)))
    assert last_known_alive(outcome(seen, day(200))) == day(28)
    assert last_known_alive(outcome(journey(), day(200))) == DAY0  # nothing since the infusion
    called = journey((SurvivalStatusRecorded(status="alive", method="phone"), day(150)))
    assert [last_known_alive(outcome(called, day(n))) for n in (149, 150)] == [DAY0, day(150)]
    lost = journey((VisitCompleted(visit_code="D28"), day(28)), (LostToFollowUp(last_contact_on=day(40)), day(70)))
    assert KnownAlive(day(40), day(70)) in outcome(lost, day(200)).known_alive
    assert [last_known_alive(outcome(lost, day(n))) for n in (35, 69, 70)] == [day(28), day(28), day(40)]


def test_a_corrected_infusion_is_the_start_of_follow_up():
    j = journey((InfusionCorrected(dose_cells_per_kg=1e7, dose_level=1, product_lot="L", donor_id="D"), day(2)))
    assert outcome(j, day(1)) is None
    assert outcome(j, day(10)).infused_on == day(2)
    assert safety(j, PROTOCOL, day(30)).dlt_evaluable is False  # day 28 from the corrected day 0
