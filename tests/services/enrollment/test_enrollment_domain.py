"""Enrollment rules: enrol, screen_fail, withdraw (pure, no I/O)."""

from datetime import UTC, date, datetime

import pytest

from services.enrollment import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import ConsentWithdrawn, Enrolled, ScreenFailed
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, subject_uuid
from shared.facts import SubjectFacts

SUBJECT = "UCT-01-001"
ENROLLED_ON = date(2025, 3, 3)


def meta(on: date, subject: str = SUBJECT) -> EventMeta:
    return EventMeta(subject_id=subject, occurred_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC),
                     recorded_by=RecordedBy(user_id="coord-1", role="coordinator"), protocol_version="test@1")


def enrolled_payload(**changes) -> Enrolled:
    values = dict(site_id="01", consent_signed_on=date(2025, 3, 1), year_of_birth=1980, sex="F",
                  disease_status="relapsed", cd19_positive=True)
    return Enrolled(**(values | changes))


def enrolled_subject() -> domain.EnrollmentSubject:
    return domain.enrol(None, meta(ENROLLED_ON), enrolled_payload())


def payloads(subject: domain.EnrollmentSubject) -> list:
    return [e.payload for e in subject.collect_events()]


def test_enrol_opens_the_subject_stream():
    subject = enrolled_subject()
    assert subject.id == subject_uuid(SUBJECT)
    assert (subject.status, subject.site_id, subject.enrolled_on) == ("enrolled", "01", ENROLLED_ON)
    assert payloads(subject) == [enrolled_payload()]


def test_consent_on_the_enrolment_day_is_accepted():
    subject = domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(consent_signed_on=ENROLLED_ON))
    assert subject.status == "enrolled"


def test_consent_after_enrolment_is_invalid():
    with pytest.raises(InvalidCommand, match="consent_signed_on.*after the enrolment date"):
        domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(consent_signed_on=date(2025, 3, 4)))


def test_cd19_negative_subject_is_not_eligible():
    with pytest.raises(RuleViolation, match="CD19"):
        domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(cd19_positive=False))


@pytest.mark.parametrize("command", ["enrol", "screen_fail"])
def test_a_subject_code_is_used_once(command):
    existing = enrolled_subject()
    payload = enrolled_payload() if command == "enrol" else ScreenFailed(site_id="01", failure_reason="low ANC")
    with pytest.raises(RuleViolation, match=f"{SUBJECT} is already used \\(enrolled\\)"):
        getattr(domain, command)(existing, meta(ENROLLED_ON), payload)


def test_screen_failure_uses_up_the_code():
    failed = domain.screen_fail(None, meta(ENROLLED_ON), ScreenFailed(site_id="02", failure_reason="CD19 negative"))
    assert (failed.status, failed.site_id, failed.enrolled_on) == ("screen_failed", "02", None)
    with pytest.raises(RuleViolation, match="already used \\(screen failed\\)"):
        domain.enrol(failed, meta(ENROLLED_ON), enrolled_payload())


def test_withdraw_an_enrolled_subject():
    subject = enrolled_subject()
    subject.collect_events()
    withdrawn = domain.withdraw(subject, meta(date(2025, 4, 1)), ConsentWithdrawn(withdrawal_reason="moved"), None)
    assert (withdrawn.status, withdrawn.withdrawn_on) == ("withdrawn", date(2025, 4, 1))
    assert payloads(withdrawn) == [ConsentWithdrawn(withdrawal_reason="moved")]


def test_withdraw_on_the_enrolment_day_is_accepted():
    withdrawn = domain.withdraw(enrolled_subject(), meta(ENROLLED_ON), ConsentWithdrawn(withdrawal_reason="moved"),
                                None)
    assert withdrawn.withdrawn_on == ENROLLED_ON


def test_withdraw_unknown_subject():
    with pytest.raises(SubjectNotFound, match=f"No subject {SUBJECT}"):
        domain.withdraw(None, meta(ENROLLED_ON), ConsentWithdrawn(withdrawal_reason="moved"), None)


def test_withdraw_twice_is_refused():
    subject = domain.withdraw(enrolled_subject(), meta(date(2025, 4, 1)), ConsentWithdrawn(withdrawal_reason="moved"),
                              None)
    with pytest.raises(RuleViolation, match="is withdrawn: only an enrolled subject"):
        domain.withdraw(subject, meta(date(2025, 4, 2)), ConsentWithdrawn(withdrawal_reason="again"), None)


def test_screen_failed_subject_cannot_withdraw():
    failed = domain.screen_fail(None, meta(ENROLLED_ON), ScreenFailed(site_id="01", failure_reason="low ANC"))
    with pytest.raises(RuleViolation, match="is screen failed"):
        domain.withdraw(failed, meta(ENROLLED_ON), ConsentWithdrawn(withdrawal_reason="moved"), None)


def test_dead_subject_cannot_withdraw():
    facts = SubjectFacts(subject_id=SUBJECT, enrolled_on=ENROLLED_ON, died_on=date(2025, 3, 20))
    with pytest.raises(RuleViolation, match="died on 2025-03-20"):
        domain.withdraw(enrolled_subject(), meta(date(2025, 4, 1)), ConsentWithdrawn(withdrawal_reason="x y"), facts)


def test_withdrawal_before_enrolment_is_invalid():
    with pytest.raises(InvalidCommand, match="before the enrolment"):
        domain.withdraw(enrolled_subject(), meta(date(2025, 3, 2)), ConsentWithdrawn(withdrawal_reason="moved"), None)
