"""Treatment: lymphodepletion days and the UCAR-T infusion. Pure rules, no I/O."""

from __future__ import annotations

from datetime import date, datetime

from shared.access.policy import Action
from shared.commands import Command
from shared.contract.events import (
    InfusionCorrected,
    LymphodepletionGiven,
    Payload,
    UCARTInfused,
)
from shared.errors import InvalidCommand, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, SubjectStream
from shared.facts import SubjectFacts
from shared.protocol import Protocol


class TreatmentSubject(SubjectStream):
    def initialise(self) -> None:
        self.ld_days: list[date] = []
        self.infusions: list[datetime] = []

    def when(self, meta: EventMeta, payload: Payload) -> None:
        match payload:
            case LymphodepletionGiven():
                self.ld_days.append(meta.occurred_at.date())
            case UCARTInfused():
                self.infusions.append(meta.occurred_at)
            case InfusionCorrected():
                self.infusions[-1] = meta.occurred_at


def require_treatable(subject_id: str, facts: SubjectFacts | None, day: date) -> SubjectFacts:
    """Only subjects treatment has learned are enrolled, and who were still on study on `day` (late
    entry of a dose given before a withdrawal or death is allowed)."""
    if facts is None or (facts.enrolled_on is None and not facts.screen_failed):
        raise SubjectNotFound(
            f"Treatment has no enrolment for {subject_id}. Enrol the subject first; "
            "if that was just done, retry in a few seconds.",
            retryable=True,
        )
    if facts.screen_failed:
        raise RuleViolation(f"Subject {subject_id} failed screening and cannot be treated.")
    if facts.withdrawn_on and day > facts.withdrawn_on:
        raise RuleViolation(f"Subject {subject_id} withdrew consent on {facts.withdrawn_on}: no further treatment.")
    if facts.died_on and day > facts.died_on:
        raise RuleViolation(f"Subject {subject_id} died on {facts.died_on}: no further treatment.")
    return facts


def give_lymphodepletion(
    subject: TreatmentSubject | None,
    meta: EventMeta,
    payload: LymphodepletionGiven,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> TreatmentSubject:
    day = meta.occurred_at.date()
    facts = require_treatable(meta.subject_id, facts, day)
    ld_days = subject.ld_days if subject else []
    limit = protocol.lymphodepletion.max_days
    if subject and subject.infusions:
        raise RuleViolation(
            f"Subject {meta.subject_id} was infused on {subject.infusions[0].date()}: "
            "lymphodepletion comes before the infusion."
        )
    if len(ld_days) >= limit:
        raise RuleViolation(
            f"Subject {meta.subject_id} already has {len(ld_days)} lymphodepletion days; "
            f"the protocol allows at most {limit}."
        )
    if day in ld_days:
        raise RuleViolation(
            f"Lymphodepletion on {day} is already recorded for {meta.subject_id}; "
            "record each day once, with all its agents."
        )
    if ld_days and day < ld_days[-1]:
        raise RuleViolation(
            f"Lymphodepletion on {day} is before the last recorded day ({ld_days[-1]}); days are recorded in order."
        )
    if facts.enrolled_on and day < facts.enrolled_on:
        raise RuleViolation(f"Lymphodepletion on {day} is before enrolment ({facts.enrolled_on}).")
    return TreatmentSubject.record_into(subject, meta, payload)


def infuse(
    subject: TreatmentSubject | None,
    meta: EventMeta,
    payload: UCARTInfused,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> TreatmentSubject:
    require_treatable(meta.subject_id, facts, meta.occurred_at.date())
    ld = protocol.lymphodepletion
    ld_days = subject.ld_days if subject else []
    if subject and len(subject.infusions) >= protocol.infusion.max_infusions:
        raise RuleViolation(
            f"Subject {meta.subject_id} was already infused on {subject.infusions[0].date()}; "
            f"the protocol allows {protocol.infusion.max_infusions} infusion(s)."
        )
    if len(ld_days) < ld.min_days:
        raise RuleViolation(
            f"Subject {meta.subject_id} has {len(ld_days)} lymphodepletion day(s); "
            f"infusion needs at least {ld.min_days} first."
        )
    _check_gap(meta, ld_days[-1], protocol)
    return TreatmentSubject.record_into(subject, meta, payload)


def _check_gap(meta: EventMeta, last_ld_day: date, protocol: Protocol) -> None:
    ld = protocol.lymphodepletion
    gap = (meta.occurred_at.date() - last_ld_day).days
    if not ld.min_gap_days_to_infusion <= gap <= ld.max_gap_days_to_infusion:
        raise RuleViolation(
            f"Infusion on {meta.occurred_at.date()} is {gap} day(s) after the last lymphodepletion day "
            f"({last_ld_day}); the protocol requires {ld.min_gap_days_to_infusion} to "
            f"{ld.max_gap_days_to_infusion} days."
        )


def correct_infusion(
    subject: TreatmentSubject | None,
    meta: EventMeta,
    payload: InfusionCorrected,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> TreatmentSubject:
    """Correct the infusion record (date, dose, lot); the reason is required and kept."""
    if subject is None or not subject.infusions:
        raise RuleViolation(f"Subject {meta.subject_id} has no infusion to correct; record the infusion instead.")
    require_treatable(meta.subject_id, facts, meta.occurred_at.date())
    if not (meta.reason or "").strip():
        raise InvalidCommand("A correction needs a reason: say why the infusion record was wrong.")
    _check_gap(meta, subject.ld_days[-1], protocol)
    return TreatmentSubject.record_into(subject, meta, payload)


# The service's commands: the route under /subjects/{subject_id}/, the rule, the action the access policy
# knows it as, and a summary.
COMMANDS = (
    Command("lymphodepletion-days", give_lymphodepletion, Action.RECORD, "Record one day of lymphodepletion"),
    Command("infusion", infuse, Action.RECORD, "Record the UCAR-T infusion (study day 0)"),
    Command("infusion-corrections", correct_infusion, Action.CORRECT, "Correct the infusion record (reason required)"),
)
