"""The follow-up schedule of one subject, derived from day 0 and the protocol's planned visits."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel

from services.followup.projections.journey import Journey, in_long_term_follow_up
from shared.protocol import PlannedVisit, Protocol

VisitStatus = Literal["upcoming", "due", "overdue", "completed", "completed_out_of_window", "not_applicable"]


class ScheduledVisit(BaseModel):
    code: str
    kind: str
    study_day: int
    target_date: date
    window_start: date
    window_end: date
    status: VisitStatus
    completed_on: date | None = None


def _completed_on(journey: Journey, visit: PlannedVisit, protocol: Protocol) -> date | None:
    if visit.code in journey.visits_completed:
        return journey.visits_completed[visit.code]
    for timepoint, code in protocol.response_visits.items():
        if code == visit.code and (response := journey.response_at(timepoint)):
            return response.assessed_on
    return None


def visit_status(
    window_start: date, window_end: date, completed_on: date | None, off_study_on: date | None, today: date
) -> VisitStatus:
    if completed_on is not None:
        return "completed" if window_start <= completed_on <= window_end else "completed_out_of_window"
    if off_study_on is not None and off_study_on <= today and window_end >= off_study_on:
        return "not_applicable"  # withdrawal or death cancels what is left (a visit missed before stays overdue)
    if today < window_start:
        return "upcoming"
    if today <= window_end:
        return "due"
    return "overdue"


def schedule(journey: Journey, protocol: Protocol, today: date) -> list[ScheduledVisit]:
    """Planned visits with target date, window and status; empty before the infusion. Long-term
    follow-up visits appear once the week-12 assessment shows remission."""
    day0 = journey.infused_on
    if day0 is None or day0 > today:
        return []
    visits = []
    for visit in protocol.followup.visits:
        if visit.kind == "ltfu" and not in_long_term_follow_up(journey, today):
            continue
        target = day0 + timedelta(days=visit.target_day)
        start, end = target - timedelta(days=visit.window_before), target + timedelta(days=visit.window_after)
        done = _completed_on(journey, visit, protocol)
        visits.append(
            ScheduledVisit(
                code=visit.code,
                kind=visit.kind,
                study_day=visit.target_day,
                target_date=target,
                window_start=start,
                window_end=end,
                completed_on=done,
                status=visit_status(start, end, done, journey.off_study_on, today),
            )
        )
    return sorted(visits, key=lambda v: (v.target_date, v.code))
