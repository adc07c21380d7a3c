"""Follow-up: adverse events, response assessments, visits, death. Pure rules, no I/O."""

from __future__ import annotations

from datetime import date
from uuid import UUID

from shared.contract.events import AEReported, Payload, ResponseAssessed, SubjectDied, VisitCompleted
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, SubjectStream
from shared.facts import SubjectFacts
from shared.protocol import Protocol


class FollowupSubject(SubjectStream):
    def initialise(self) -> None:
        self.ae_ids: set[UUID] = set()
        self.assessed_timepoints: set[str] = set()
        self.visits_completed: dict[str, date] = {}
        self.died_on: date | None = None
        self.last_record_on: date | None = None  # clinical date of the latest record

    def when(self, meta: EventMeta, payload: Payload) -> None:
        day = meta.occurred_at.date()
        self.last_record_on = max(self.last_record_on or day, day)
        match payload:
            case AEReported():
                self.ae_ids.add(payload.ae_id)
            case ResponseAssessed():
                self.assessed_timepoints.add(payload.timepoint)
            case VisitCompleted():
                self.visits_completed[payload.visit_code] = meta.occurred_at.date()
            case SubjectDied():
                self.died_on = meta.occurred_at.date()


def _require_enrolled(meta: EventMeta, facts: SubjectFacts | None) -> SubjectFacts:
    if facts is not None and facts.screen_failed:  # final: unlike "not yet known", not retryable
        raise RuleViolation(f"Subject {meta.subject_id} failed screening and is not followed up.")
    if facts is None or facts.enrolled_on is None:
        raise SubjectNotFound(f"Follow-up has no enrolment for {meta.subject_id}: check the study code, "
                              "or retry in a few seconds if the subject was just enrolled.", retryable=True)
    return facts


def _require_infused(subject: FollowupSubject | None, meta: EventMeta, facts: SubjectFacts | None, what: str,
                     *, after_withdrawal: bool = False) -> date:
    facts = _require_enrolled(meta, facts)
    if facts.infused_on is None:
        raise RuleViolation(f"{what} are recorded from the UCAR-T infusion on, and {meta.subject_id} has no "
                            "infusion recorded yet. Record the infusion first (if it was just recorded, "
                            "retry in a few seconds).", retryable=True)
    day = meta.occurred_at.date()
    if day < facts.infused_on:
        raise RuleViolation(f"{what}: {day} is before the infusion ({facts.infused_on}); "
                            "check the date (study day 0 is the infusion).")
    died_on = subject.died_on if subject else None
    if died_on and day > died_on:
        raise RuleViolation(f"{what}: {day} is after the subject's death ({died_on}); check the date.")
    if not after_withdrawal and facts.withdrawn_on and day > facts.withdrawn_on:
        raise RuleViolation(f"{what}: {day} is after {meta.subject_id} withdrew consent ({facts.withdrawn_on}); "
                            "no study procedures after withdrawal.")
    return facts.infused_on


def report_ae(subject: FollowupSubject | None, meta: EventMeta, payload: AEReported,
              facts: SubjectFacts | None) -> FollowupSubject:
    _require_infused(subject, meta, facts, "Adverse events", after_withdrawal=True)  # safety reporting goes on
    if subject and payload.ae_id in subject.ae_ids:
        raise RuleViolation(f"Adverse event {payload.ae_id} is already recorded for {meta.subject_id}.")
    return FollowupSubject.record_into(subject, meta, payload)


def assess_response(subject: FollowupSubject | None, meta: EventMeta, payload: ResponseAssessed,
                    facts: SubjectFacts | None) -> FollowupSubject:
    _require_infused(subject, meta, facts, "Response assessments")
    if payload.timepoint != "UNSCHEDULED" and subject and payload.timepoint in subject.assessed_timepoints:
        raise RuleViolation(f"The {payload.timepoint} response of {meta.subject_id} is already recorded; "
                            "use UNSCHEDULED for an extra assessment.")
    return FollowupSubject.record_into(subject, meta, payload)


def complete_visit(subject: FollowupSubject | None, meta: EventMeta, payload: VisitCompleted,
                   facts: SubjectFacts | None, protocol: Protocol) -> FollowupSubject:
    if payload.visit_code not in protocol.visit_codes:
        raise InvalidCommand(f"Visit code {payload.visit_code} is not in protocol {protocol.version}; "
                             f"valid codes: {', '.join(v.code for v in protocol.followup.visits)}.")
    _require_infused(subject, meta, facts, "Visits")
    if subject and payload.visit_code in subject.visits_completed:
        raise RuleViolation(f"Visit {payload.visit_code} of {meta.subject_id} was already completed on "
                            f"{subject.visits_completed[payload.visit_code]}.")
    return FollowupSubject.record_into(subject, meta, payload)


def record_death(subject: FollowupSubject | None, meta: EventMeta, payload: SubjectDied,
                 facts: SubjectFacts | None) -> FollowupSubject:
    facts = _require_enrolled(meta, facts)
    day = meta.occurred_at.date()
    if subject and subject.died_on:
        raise RuleViolation(f"The death of {meta.subject_id} is already recorded ({subject.died_on}).")
    if day < facts.enrolled_on:
        raise InvalidCommand(f"The date of death {day} is before enrolment ({facts.enrolled_on}); check the date.")
    if subject and subject.last_record_on and day < subject.last_record_on:
        raise InvalidCommand(f"The date of death {day} is before follow-up data already recorded for "
                             f"{meta.subject_id} (on {subject.last_record_on}); check the date.")
    return FollowupSubject.record_into(subject, meta, payload)
