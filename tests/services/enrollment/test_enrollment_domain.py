"""Enrollment rules: enrol, screen_fail, withdraw (pure, no I/O)."""

from datetime import UTC, date, datetime

import pytest

from services.enrollment import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import ConsentWithdrawn, Enrolled, ScreenFailed
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, subject_uuid
from shared.facts import SubjectFacts
from shared.protocol import load_protocol

SUBJECT = "UCT-01-001"
ENROLLED_ON = date(2025, 3, 3)


PROTOCOL = load_protocol()


def meta(on: date, subject: str = SUBJECT) -> EventMeta:
    return EventMeta(
        subject_id=subject,
        occurred_at=datetime(on.year, on.month, on.day, 9, tzinfo=UTC),
        recorded_by=RecordedBy(user_id="coord-1", role="coordinator"),
        protocol_version="test@1",
    )


def enrolled_payload(**changes) -> Enrolled:
    values = dict(
        site_id="01",
        consent_signed_on=date(2025, 3, 1),
        year_of_birth=1980,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    return Enrolled(**(values | changes))


def enrolled_subject() -> domain.EnrollmentSubject:
    return domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(), PROTOCOL)


def payloads(subject: domain.EnrollmentSubject) -> list:
    return [e.payload for e in subject.collect_events()]


def test_enrol_opens_the_subject_stream():
    subject = enrolled_subject()
    assert subject.id == subject_uuid(SUBJECT)
    assert (subject.status, subject.site_id, subject.enrolled_on) == ("enrolled", "01", ENROLLED_ON)
    assert payloads(subject) == [enrolled_payload()]


def test_consent_on_the_enrolment_day_is_accepted():
    subject = domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(consent_signed_on=ENROLLED_ON), PROTOCOL)
    assert subject.status == "enrolled"


def test_consent_after_enrolment_is_invalid():
    with pytest.raises(InvalidCommand, match=r"consent_signed_on.*after the enrolment date"):
        domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(consent_signed_on=date(2025, 3, 4)), PROTOCOL)


def test_cd19_negative_subject_is_not_eligible():
    with pytest.raises(RuleViolation, match="CD19"):
        domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(cd19_positive=False), PROTOCOL)


@pytest.mark.parametrize("command", ["enrol", "screen_fail"])
def test_a_subject_code_is_used_once(command):
    existing = enrolled_subject()
    payload = enrolled_payload() if command == "enrol" else ScreenFailed(site_id="01", failure_reason="low ANC")
    context = (PROTOCOL,) if command == "enrol" else ()
    with pytest.raises(RuleViolation, match=f"{SUBJECT} is already used \\(enrolled\\)"):
        getattr(domain, command)(existing, meta(ENROLLED_ON), payload, *context)


def test_screen_failure_uses_up_the_code():
    failed = domain.screen_fail(None, meta(ENROLLED_ON), ScreenFailed(site_id="02", failure_reason="CD19 negative"))
    assert (failed.status, failed.site_id, failed.enrolled_on) == ("screen_failed", "02", None)
    with pytest.raises(RuleViolation, match="already used \\(screen failed\\)"):
        domain.enrol(failed, meta(ENROLLED_ON), enrolled_payload(), PROTOCOL)


def test_withdraw_an_enrolled_subject():
    subject = enrolled_subject()
    subject.collect_events()
    withdrawn = domain.withdraw(subject, meta(date(2025, 4, 1)), ConsentWithdrawn(withdrawal_reason="moved"), None)
    assert (withdrawn.status, withdrawn.withdrawn_on) == ("withdrawn", date(2025, 4, 1))
    assert payloads(withdrawn) == [ConsentWithdrawn(withdrawal_reason="moved")]


def test_withdraw_on_the_enrolment_day_is_accepted():
    withdrawn = domain.withdraw(
        enrolled_subject(), meta(ENROLLED_ON), ConsentWithdrawn(withdrawal_reason="moved"), None
    )
    assert withdrawn.withdrawn_on == ENROLLED_ON


def test_withdraw_unknown_subject():
    with pytest.raises(SubjectNotFound, match=f"No subject {SUBJECT}"):
        domain.withdraw(None, meta(ENROLLED_ON), ConsentWithdrawn(withdrawal_reason="moved"), None)


def test_withdraw_twice_is_refused():
    subject = domain.withdraw(
        enrolled_subject(), meta(date(2025, 4, 1)), ConsentWithdrawn(withdrawal_reason="moved"), None
    )
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


# --- the protocol's enrolment rules: study start and ages at consent ----------------------------


RULES = PROTOCOL.enrolment


def enrol_with_protocol(**changes) -> domain.EnrollmentSubject:
    return domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(**changes), PROTOCOL)


def test_shipped_rules_take_children_and_adults_from_the_study_start():
    assert (RULES.min_age_years, RULES.max_age_years, RULES.study_start_date) == (1, 75, date(2024, 1, 1))
    consent_year = ENROLLED_ON.year
    for born in (consent_year - 1, 1980, consent_year - 75):
        assert enrol_with_protocol(year_of_birth=born).status == "enrolled"
    assert enrol_with_protocol(consent_signed_on=RULES.study_start_date).status == "enrolled"


@pytest.mark.parametrize("consent", [date(1, 1, 1), date(2023, 12, 31)])
def test_consent_before_the_study_started_is_invalid(consent):
    with pytest.raises(
        InvalidCommand,
        match=f"consent_signed_on \\({consent}\\) is before the study started "
        "\\(2024-01-01\\): correct the date of consent",
    ):
        enrol_with_protocol(consent_signed_on=consent)


@pytest.mark.parametrize("born", [2026, 2100])
def test_birth_after_the_consent_year_is_invalid(born):
    with pytest.raises(
        InvalidCommand, match=f"year_of_birth \\({born}\\) is after the year consent was signed \\(2025\\)"
    ):
        enrol_with_protocol(year_of_birth=born)


@pytest.mark.parametrize(("born", "age"), [(2025, 0), (1949, 76), (1900, 125)])
def test_an_age_outside_the_protocol_range_is_invalid(born, age):
    with pytest.raises(
        InvalidCommand,
        match=f"year_of_birth \\({born}\\) gives an age of {age} at consent; the protocol enrols ages 1 to 75",
    ):
        enrol_with_protocol(year_of_birth=born)


def test_age_range_comes_from_the_protocol():
    adults = PROTOCOL.model_copy(update={"enrolment": RULES.model_copy(update={"min_age_years": 18})})
    with pytest.raises(InvalidCommand, match="ages 18 to 75"):
        domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(year_of_birth=2010), adults)
    assert domain.enrol(None, meta(ENROLLED_ON), enrolled_payload(year_of_birth=2007), adults).status == "enrolled"


# --- no withdrawal dated before what other services recorded ------------------------------------


def test_withdrawal_before_the_latest_clinical_record_is_invalid_and_names_it():
    treated = SubjectFacts(subject_id=SUBJECT, last_record_on=date(2025, 3, 20))  # e.g. an infusion, a visit
    with pytest.raises(
        InvalidCommand,
        match=f"withdrawal date 2025-03-19 is before data already recorded for {SUBJECT} \\(on 2025-03-20\\); "
        "check the date",
    ):
        domain.withdraw(
            enrolled_subject(), meta(date(2025, 3, 19)), ConsentWithdrawn(withdrawal_reason="moved"), treated
        )
    on_the_day = domain.withdraw(
        enrolled_subject(), meta(date(2025, 3, 20)), ConsentWithdrawn(withdrawal_reason="moved"), treated
    )
    assert on_the_day.withdrawn_on == date(2025, 3, 20)


def test_withdrawal_without_records_elsewhere_is_only_checked_against_enrolment():
    nothing_yet = SubjectFacts(subject_id=SUBJECT)
    withdrawn = domain.withdraw(
        enrolled_subject(), meta(ENROLLED_ON), ConsentWithdrawn(withdrawal_reason="moved"), nothing_yet
    )
    assert withdrawn.withdrawn_on == ENROLLED_ON
