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
    return SubjectOutcome(
        subject_id=journey.subject_id,
        infused_on=infused_on,
        assessments=tuple(
            Assessment(r.timepoint, clinical.response_code(r.response), r.assessed_on)
            for r in journey.responses_by(as_of)
        ),
        died_on=_on_or_before(journey.died_on, as_of),
        known_alive=tuple(k for k in journey.known_alive() if k.by(as_of)),
        subsequent_therapy_on=next((on for _, on in journey.subsequent_therapy if on <= as_of), None),
    )


def is_dlt(ae: AdverseEvent, infused_on: date, protocol: Protocol, as_of: date | None = None) -> bool:
    """An AE matching a DLT rule of the protocol by the worst grade it reached inside the DLT window (and
    by `as_of`): a grade reached before day 0 or after the window does not count."""
    window_end = infused_on + timedelta(days=protocol.dlt.window_days)
    grade = ae.worst_grade_within(infused_on, min(window_end, as_of) if as_of else window_end)
    return grade is not None and any(
        ae.report.category == rule.category
        and grade >= rule.min_grade
        and clinical.at_least(ae.report.relatedness, rule.min_relatedness)
        for rule in protocol.dlt.rules
    )


def _ae_summary(ae: AdverseEvent, infused_on: date, protocol: Protocol, as_of: date) -> AESummary:
    grade = ae.worst_grade_by(as_of) or ae.report.grade  # the onset is by as_of: a grade was reached
    return AESummary(
        ae_id=str(ae.ae_id),
        category=ae.report.category,
        grade=grade,
        serious=ae.report.serious,
        suspected=ae.report.suspected,
        expected=ae.report.expected,
        fatal_or_life_threatening=clinical.fatal_or_life_threatening(grade, ae.report.seriousness_criteria),
        dlt=is_dlt(ae, infused_on, protocol, as_of),
    )


def safety(journey: Journey, protocol: Protocol, as_of: date) -> SubjectSafety | None:
    """None for a subject not infused by `as_of` (outside the safety population). The AEs are the
    treatment-emergent ones with onset by `as_of`, each at the worst grade reached by then."""
    infused_on = _on_or_before(journey.infused_on, as_of)
    if infused_on is None:
        return None
    onset_by_as_of = journey.adverse_events_by(as_of)
    emergent = [ae for ae in onset_by_as_of if journey.treatment_emergent(ae)]
    aes = tuple(_ae_summary(ae, infused_on, protocol, as_of) for ae in emergent)
    window_end = infused_on + timedelta(days=protocol.dlt.window_days)
    # Left the study (known by `as_of`) on or before the window's last day: not through it alive and on study.
    left = _on_or_before(journey.off_study_on, as_of)
    evaluable = clinical.dlt_evaluable(
        had_dlt=any(a.dlt for a in aes),
        window_completed=as_of > window_end,
        left_in_window=left is not None and left <= window_end,
        early_exit_evaluable=protocol.dlt.early_exit_evaluable,
    )
    return SubjectSafety(
        subject_id=journey.subject_id,
        dlt_evaluable=evaluable,
        aes=aes,
        not_treatment_emergent=len(onset_by_as_of) - len(emergent),
    )
