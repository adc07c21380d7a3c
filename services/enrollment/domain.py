"""Enrollment: screening, consent, enrolment, withdrawal. Pure rules, no I/O."""

from __future__ import annotations

from datetime import date

from shared.access.policy import Action
from shared.commands import Command
from shared.contract.events import ConsentWithdrawn, Enrolled, Payload, ScreenFailed
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, SubjectStream
from shared.facts import SubjectFacts
from shared.protocol import Enrolment, Protocol


class EnrollmentSubject(SubjectStream):
    def initialise(self) -> None:
        self.status = "screening"
        self.site_id: str | None = None
        self.enrolled_on: date | None = None
        self.withdrawn_on: date | None = None

    def when(self, meta: EventMeta, payload: Payload) -> None:
        match payload:
            case Enrolled():
                self.status, self.site_id, self.enrolled_on = "enrolled", payload.site_id, meta.occurred_at.date()
            case ScreenFailed():
                self.status, self.site_id = "screen_failed", payload.site_id
            case ConsentWithdrawn():
                self.status, self.withdrawn_on = "withdrawn", meta.occurred_at.date()


def _code_is_free(subject: EnrollmentSubject | None) -> None:
    if subject is not None:
        raise RuleViolation(
            f"Subject code {subject.subject_id} is already used ({subject.status.replace('_', ' ')}). "
            "Each study code is assigned once: check the code on the screening log."
        )


def _plausible_for_the_protocol(payload: Enrolled, rules: Enrolment) -> None:
    """Dates a typing error would give: consent before the study, a birth after consent, an age
    outside the protocol's range (counted in calendar years: only the year of birth is recorded)."""
    consented = payload.consent_signed_on
    if consented < rules.study_start_date:
        raise InvalidCommand(
            f"consent_signed_on ({consented}) is before the study started "
            f"({rules.study_start_date}): correct the date of consent."
        )
    if payload.year_of_birth > consented.year:
        raise InvalidCommand(
            f"year_of_birth ({payload.year_of_birth}) is after the year consent was signed "
            f"({consented.year}): correct the year of birth or consent_signed_on."
        )
    age = consented.year - payload.year_of_birth
    if not rules.min_age_years <= age <= rules.max_age_years:
        raise InvalidCommand(
            f"year_of_birth ({payload.year_of_birth}) gives an age of {age} at consent; the "
            f"protocol enrols ages {rules.min_age_years} to {rules.max_age_years}. Check the "
            "year of birth; a subject outside that range is recorded as a screening failure."
        )


def enrol(
    subject: EnrollmentSubject | None, meta: EventMeta, payload: Enrolled, protocol: Protocol
) -> EnrollmentSubject:
    _code_is_free(subject)
    enrolled_on = meta.occurred_at.date()
    if payload.consent_signed_on > enrolled_on:
        raise InvalidCommand(
            f"consent_signed_on ({payload.consent_signed_on}) is after the enrolment date ({enrolled_on}): "
            "informed consent must be signed on or before enrolment. Correct either date."
        )
    _plausible_for_the_protocol(payload, protocol.enrolment)
    if not payload.cd19_positive:
        raise RuleViolation(
            "Not eligible: CD19 expression on blasts must be confirmed before enrolment. "
            "Record a screening failure instead."
        )
    return EnrollmentSubject.record_into(None, meta, payload)


def screen_fail(subject: EnrollmentSubject | None, meta: EventMeta, payload: ScreenFailed) -> EnrollmentSubject:
    _code_is_free(subject)
    return EnrollmentSubject.record_into(None, meta, payload)


def withdraw(
    subject: EnrollmentSubject | None, meta: EventMeta, payload: ConsentWithdrawn, facts: SubjectFacts | None
) -> EnrollmentSubject:
    if subject is None:
        raise SubjectNotFound(f"No subject {meta.subject_id} in enrollment: check the study code.")
    if subject.status != "enrolled":
        raise RuleViolation(
            f"Subject {subject.subject_id} is {subject.status.replace('_', ' ')}: "
            "only an enrolled subject can withdraw consent."
        )
    if facts and facts.died_on:
        raise RuleViolation(f"Subject {subject.subject_id} died on {facts.died_on}: consent cannot be withdrawn.")
    day = meta.occurred_at.date()
    if subject.enrolled_on and day < subject.enrolled_on:
        raise InvalidCommand(
            f"The withdrawal date {day} is before the enrolment ({subject.enrolled_on}); correct the date."
        )
    # The subject was on study on the day of their latest clinical record (a treatment, a visit, an AE).
    if facts and facts.last_record_on and day < facts.last_record_on:
        raise InvalidCommand(
            f"The withdrawal date {day} is before data already recorded for {subject.subject_id} "
            f"(on {facts.last_record_on}); check the date: consent was withdrawn on that day or later."
        )
    return EnrollmentSubject.record_into(subject, meta, payload)


# The service's commands: the route under /subjects/{subject_id}/, the rule, the action the access policy
# knows it as, and a summary.
COMMANDS = (
    Command("enrolment", enrol, Action.RECORD, "Enrol a subject"),
    Command("screen-failure", screen_fail, Action.RECORD, "Record a screening failure"),
    Command("consent-withdrawal", withdraw, Action.RECORD, "Record withdrawal of consent"),
)
