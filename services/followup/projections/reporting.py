"""Expedited safety reporting clocks: SAE to the sponsor within 24 h of site awareness; SUSAR to the
regulator within 7 days (fatal or life-threatening) or 15 days of sponsor receipt (21 CFR 312.32)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel

from services.followup.projections.journey import AdverseEvent, Journey
from shared import clinical
from shared.protocol import Protocol

ReportStatus = Literal["due", "overdue", "submitted", "submitted_late", "awaiting_sponsor_receipt"]


class ReportDue(BaseModel):
    subject_id: str
    site_id: str | None
    ae_id: UUID
    term: str
    report: Literal["sae_to_sponsor", "susar_to_regulator"]
    clock_started_at: datetime | None
    due_at: datetime | None
    received_at: datetime | None
    status: ReportStatus


def _after(moment: datetime, delta: timedelta) -> datetime:
    """moment + delta, or the end of time for a moment stored before input years were checked
    (9999-12-31 plus a day does not exist)."""
    try:
        return moment + delta
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _status(due_at: datetime, received_at: datetime | None, now: datetime) -> ReportStatus:
    if received_at is not None:
        return "submitted" if received_at <= due_at else "submitted_late"
    return "due" if now <= due_at else "overdue"


def reports_due(journey: Journey, protocol: Protocol, now: datetime) -> list[ReportDue]:
    clocks = protocol.safety_reporting
    due: list[ReportDue] = []
    for ae in journey.adverse_events.values():
        if not ae.report.serious:
            continue
        base = dict(subject_id=journey.subject_id, site_id=journey.site_id, ae_id=ae.ae_id, term=ae.report.term)
        sae_due = _after(ae.report.aware_at, timedelta(hours=clocks.sae_to_sponsor_hours))
        sponsor_received = ae.reports_submitted.get("sae_to_sponsor")
        due.append(
            ReportDue(
                **base,
                report="sae_to_sponsor",
                clock_started_at=ae.report.aware_at,
                due_at=sae_due,
                received_at=sponsor_received,
                status=_status(sae_due, sponsor_received, now),
            )
        )
        if _is_susar(ae):
            due.append(_susar(base, ae, sponsor_received, protocol, now))
    return due


def _worst_grade_so_far(ae: AdverseEvent, now: datetime) -> int:
    """The worst grade reached by `now` (at least the grade at onset): a later worsening is not known yet."""
    return ae.worst_grade_by(max(now.date(), ae.onset_on)) or ae.report.grade


def _is_susar(ae: AdverseEvent) -> bool:
    return clinical.susar(ae.report.serious, ae.report.suspected, ae.report.expected)


def _susar(
    base: dict[str, Any], ae: AdverseEvent, sponsor_received: datetime | None, protocol: Protocol, now: datetime
) -> ReportDue:
    clocks = protocol.safety_reporting
    received = ae.reports_submitted.get("susar_to_regulator")
    if sponsor_received is None:  # the regulator clock starts when the sponsor first knows
        return ReportDue(
            **base,
            report="susar_to_regulator",
            clock_started_at=None,
            due_at=None,
            received_at=received,
            status="submitted" if received else "awaiting_sponsor_receipt",
        )
    severe = clinical.fatal_or_life_threatening(_worst_grade_so_far(ae, now), ae.report.seriousness_criteria)
    days = clocks.fatal_or_life_threatening_susar_days if severe else clocks.other_susar_days
    due_at = _after(sponsor_received, timedelta(days=days))
    return ReportDue(
        **base,
        report="susar_to_regulator",
        clock_started_at=sponsor_received,
        due_at=due_at,
        received_at=received,
        status=_status(due_at, received, now),
    )
