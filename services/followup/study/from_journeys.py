"""From journeys to the per-subject summaries of the study tables (what was known on `as_of`)."""

from __future__ import annotations

from datetime import date, timedelta

from services.followup.projections.journey import AdverseEvent, Journey
from services.followup.study.inputs import (
    AESummary,
    Assessment,
    SubjectOutcome,
    SubjectSafety,
)
from shared import clinical
from shared.protocol import Protocol


def _on_or_before(day: date | None, as_of: date) -> date | None:
    return day if day is not None and day <= as_of else None


def outcome(journey: Journey, as_of: date) -> SubjectOutcome | None:
    """None for a subject not infused by `as_of` (outside the efficacy population)."""
    infused_on = _on_or_before(journey.infused_on, as_of)
    if infused_on is None:
        return None
    assessments = tuple(
        Assessment(r.timepoint, clinical.response_code(r.response), r.assessed_on)
        for r in journey.responses
        if r.assessed_on <= as_of
    )
    relapse = next((a.assessed_on for a in assessments if a.response == "RELAPSE"), None)
    therapy = next((on for _, on in journey.subsequent_therapy if on <= as_of), None)
    last_contact = journey.last_contact_on or journey.last_event_on or infused_on
    return SubjectOutcome(
        subject_id=journey.subject_id,
        infused_on=infused_on,
        assessments=assessments,
        relapsed_on=relapse,
        died_on=_on_or_before(journey.died_on, as_of),
        last_contact_on=max(infused_on, min(last_contact, as_of)),
        subsequent_therapy_on=therapy,
    )


def is_dlt(ae: AdverseEvent, infused_on: date, protocol: Protocol) -> bool:
    """An AE matching a DLT rule of the protocol, with onset inside the DLT window."""
    if not 0 <= (ae.onset_on - infused_on).days <= protocol.dlt.window_days:
        return False
    return any(
        ae.report.category == rule.category
        and ae.worst_grade >= rule.min_grade
        and clinical.at_least(ae.report.relatedness, rule.min_relatedness)
        for rule in protocol.dlt.rules
    )


def safety(journey: Journey, protocol: Protocol, as_of: date) -> SubjectSafety | None:
    """None for a subject not infused by `as_of` (outside the safety population)."""
    infused_on = _on_or_before(journey.infused_on, as_of)
    if infused_on is None:
        return None
    aes = tuple(
        AESummary(
            ae_id=str(ae.ae_id),
            category=ae.report.category,
            grade=ae.worst_grade,
            serious=ae.report.serious,
            suspected=ae.report.suspected,
            expected=ae.report.expected,
            fatal_or_life_threatening=clinical.fatal_or_life_threatening(
                ae.worst_grade, ae.report.seriousness_criteria
            ),
            dlt=is_dlt(ae, infused_on, protocol),
        )
        for ae in journey.adverse_events.values()
        if ae.onset_on <= as_of
    )
    window_end = infused_on + timedelta(days=protocol.dlt.window_days)
    # Left the study (known by `as_of`) on or before the window's last day: not through it alive and on study.
    left = _on_or_before(journey.off_study_on, as_of)
    evaluable = clinical.dlt_evaluable(
        had_dlt=any(a.dlt for a in aes),
        window_completed=as_of > window_end,
        left_in_window=left is not None and left <= window_end,
        early_exit_evaluable=protocol.dlt.early_exit_evaluable,
    )
    return SubjectSafety(subject_id=journey.subject_id, dlt_evaluable=evaluable, aes=aes)
