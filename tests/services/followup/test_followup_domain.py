"""Follow-up rules: adverse events, response assessments, visits and death (pure, no I/O)."""

import re
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from services.followup import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import AEReported, ResponseAssessed, SubjectDied, VisitCompleted
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta
from shared.facts import SubjectFacts
from shared.protocol import load_protocol

PROTOCOL = load_protocol()
SUBJECT = "UCT-02-003"
ENROLLED_ON = date(2025, 3, 3)
DAY0 = date(2025, 3, 12)


def meta(on: date) -> EventMeta:
    return EventMeta(subject_id=SUBJECT, occurred_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC),
                     recorded_by=RecordedBy(user_id="inv-1", role="investigator"), protocol_version=PROTOCOL.version)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def facts(infused: bool = True, **changes) -> SubjectFacts:
    infused_at = datetime(DAY0.year, DAY0.month, DAY0.day, 10, tzinfo=UTC) if infused else None
    return SubjectFacts(**({"subject_id": SUBJECT, "enrolled_on": ENROLLED_ON, "infused_at": infused_at} | changes))


def ae(**changes) -> AEReported:
    return AEReported(**({"term": "Cytokine release syndrome", "category": "CRS", "grade": 2, "serious": False,
                          "relatedness": "probable"} | changes))


def response(timepoint: str = "W4", result: str = "CR") -> ResponseAssessed:
    return ResponseAssessed(timepoint=timepoint, response=result, marrow_blasts_pct=1.0)


def died(on: date, subject=None) -> domain.FollowupSubject:
    return domain.record_death(subject, meta(on), SubjectDied(primary_cause="disease_progression"), facts())


# The three commands that need an infused subject, as (name, call(subject, on, facts)).
NEEDS_INFUSION = {
    "ae": lambda s, on, f: domain.report_ae(s, meta(on), ae(), f),
    "response": lambda s, on, f: domain.assess_response(s, meta(on), response("UNSCHEDULED"), f),
    "visit": lambda s, on, f: domain.complete_visit(s, meta(on), VisitCompleted(visit_code="D7"), f, PROTOCOL),
}


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_records_from_the_infusion_day_on(command):
    subject = NEEDS_INFUSION[command](None, day(0), facts())
    assert len(subject.collect_events()) == 1


@pytest.mark.parametrize("command", NEEDS_INFUSION)
@pytest.mark.parametrize("known", [None, SubjectFacts(subject_id=SUBJECT)])
def test_unknown_enrolment_is_retryable(command, known):
    with pytest.raises(SubjectNotFound, match=f"no enrolment for {SUBJECT}") as refused:
        NEEDS_INFUSION[command](None, day(1), known)
    assert refused.value.retryable is True


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_infusion_not_yet_known_is_retryable(command):
    with pytest.raises(RuleViolation, match="no infusion recorded yet") as refused:
        NEEDS_INFUSION[command](None, day(1), facts(infused=False))
    assert refused.value.retryable is True


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_date_before_the_infusion_is_refused(command):
    with pytest.raises(RuleViolation, match=f"{day(-1)} is before the infusion \\({DAY0}\\)") as refused:
        NEEDS_INFUSION[command](None, day(-1), facts())
    assert refused.value.retryable is False


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_date_after_death_is_refused_death_day_accepted(command):
    with pytest.raises(RuleViolation, match=f"{day(21)} is after the subject's death \\({day(20)}\\)"):
        NEEDS_INFUSION[command](died(day(20)), day(21), facts())
    on_death_day = NEEDS_INFUSION[command](died(day(20)), day(20), facts())
    assert len(on_death_day.collect_events()) == 2


def test_ae_ids_are_tracked_and_a_duplicate_is_refused():
    first = ae(grade=3)
    subject = domain.report_ae(None, meta(day(2)), first, facts())
    subject = domain.report_ae(subject, meta(day(3)), ae(category="ICANS", term="ICANS"), facts())
    assert first.ae_id in subject.ae_ids and len(subject.ae_ids) == 2
    with pytest.raises(RuleViolation, match=f"{first.ae_id} is already recorded"):
        domain.report_ae(subject, meta(day(4)), first, facts())


def test_a_scheduled_timepoint_is_assessed_once_unscheduled_any_number():
    subject = domain.assess_response(None, meta(day(28)), response("W4"), facts())
    with pytest.raises(RuleViolation, match="W4 response .* already recorded.*UNSCHEDULED"):
        domain.assess_response(subject, meta(day(30)), response("W4", "CRi"), facts())
    subject = domain.assess_response(subject, meta(day(40)), response("UNSCHEDULED"), facts())
    subject = domain.assess_response(subject, meta(day(45)), response("UNSCHEDULED"), facts())
    subject = domain.assess_response(subject, meta(day(56)), response("W8"), facts())
    assert subject.assessed_timepoints == {"W4", "W8", "UNSCHEDULED"}
    assert len(subject.collect_events()) == 4


def test_unknown_visit_code_is_invalid_and_names_the_valid_ones():
    refusal = f"Visit code D99 is not in protocol {re.escape(PROTOCOL.version)}; valid codes: D1, D4"
    with pytest.raises(InvalidCommand, match=refusal):
        domain.complete_visit(None, meta(day(7)), VisitCompleted(visit_code="D99"), facts(), PROTOCOL)


def test_a_visit_is_completed_once():
    subject = domain.complete_visit(None, meta(day(7)), VisitCompleted(visit_code="D7"), facts(), PROTOCOL)
    assert subject.visits_completed == {"D7": day(7)}
    with pytest.raises(RuleViolation, match=f"Visit D7 .* already completed on {day(7)}"):
        domain.complete_visit(subject, meta(day(8)), VisitCompleted(visit_code="D7"), facts(), PROTOCOL)


@pytest.mark.parametrize("command", [*NEEDS_INFUSION, "death"])
def test_screen_failed_subject_is_not_followed_up_and_retrying_will_not_help(command):
    failed = SubjectFacts(subject_id=SUBJECT, site_id="02", screen_failed=True)
    with pytest.raises(RuleViolation, match=f"{SUBJECT} failed screening") as refused:
        if command == "death":
            domain.record_death(None, meta(day(1)), SubjectDied(primary_cause="unknown"), failed)
        else:
            NEEDS_INFUSION[command](None, day(1), failed)
    assert refused.value.retryable is False


def test_death_may_be_recorded_before_infusion():
    subject = domain.record_death(None, meta(ENROLLED_ON + timedelta(days=2)),
                                  SubjectDied(primary_cause="adverse_event"), facts(infused=False))
    assert subject.died_on == ENROLLED_ON + timedelta(days=2)


@pytest.mark.parametrize("known", [None, SubjectFacts(subject_id=SUBJECT)])
def test_death_of_unknown_subject_is_retryable(known):
    with pytest.raises(SubjectNotFound, match=f"no enrolment for {SUBJECT}") as refused:
        domain.record_death(None, meta(day(3)), SubjectDied(primary_cause="unknown"), known)
    assert refused.value.retryable is True


def test_death_before_enrolment_is_invalid():
    with pytest.raises(InvalidCommand, match="before enrolment"):
        domain.record_death(None, meta(ENROLLED_ON - timedelta(days=1)), SubjectDied(primary_cause="other"), facts())


def test_death_is_recorded_once():
    with pytest.raises(RuleViolation, match=f"death of {SUBJECT} is already recorded \\({day(20)}\\)"):
        died(day(25), died(day(20)))


def test_events_of_a_subject_accumulate_in_one_stream():
    subject = domain.report_ae(None, meta(day(1)), ae(), facts())
    subject = domain.complete_visit(subject, meta(day(1)), VisitCompleted(visit_code="D1"), facts(), PROTOCOL)
    subject = died(day(5), subject)
    assert [type(e.payload).__name__ for e in subject.collect_events()] == ["AEReported", "VisitCompleted",
                                                                            "SubjectDied"]


def test_after_withdrawal_no_visits_or_assessments_but_safety_reporting_goes_on():
    withdrawn = facts(withdrawn_on=day(10))
    with pytest.raises(RuleViolation, match="withdrew consent"):
        domain.complete_visit(None, meta(day(11)), VisitCompleted(visit_code="D14"), withdrawn, PROTOCOL)
    with pytest.raises(RuleViolation, match="withdrew consent"):
        domain.assess_response(None, meta(day(11)), response("UNSCHEDULED"), withdrawn)
    assert domain.complete_visit(None, meta(day(10)), VisitCompleted(visit_code="D7"), withdrawn, PROTOCOL)
    assert domain.report_ae(None, meta(day(30)), ae(), withdrawn).ae_ids


def test_death_dated_before_data_already_recorded_is_invalid():
    subject = domain.report_ae(None, meta(day(20)), ae(), facts())
    with pytest.raises(InvalidCommand, match="before follow-up data already recorded"):
        died(day(19), subject)
    assert died(day(20), subject).died_on == day(20)
