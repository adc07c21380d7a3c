"""The follow-up schedule of one subject, derived from day 0 and the protocol's planned visits.

Survival contacts (kind "survival") are planned for infused subjects not in long-term follow-up (whose
month 6-12 assessments take their place), also after the main follow-up was completed: only death,
withdrawal or loss to follow-up cancels them.
"""

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


def _survival_contact_on(journey: Journey, visit: PlannedVisit, start: date, end: date, today: date) -> date | None:
    """The contact that names the visit; failing that, the first alive contact naming no visit inside its
    window (the survival status is what the visit is for; a contact naming another visit was meant for that one)."""
    alive = [c for c in journey.survival_contacts if c.status == "alive" and c.contacted_on <= today]
    named = next((c.contacted_on for c in alive if c.visit_code == visit.code), None)
    unnamed = (c.contacted_on for c in alive if c.visit_code is None and start <= c.contacted_on <= end)
    return named or next(unnamed, None)


def _completed_on(journey: Journey, visit: PlannedVisit, protocol: Protocol, today: date) -> date | None:
    """The completion known by `today`: a visit, a sample naming it, or its response assessment."""
    if (done := journey.visits_completed.get(visit.code)) and done <= today:
        return done
    for timepoint, code in protocol.response_visits.items():
        if code == visit.code and (response := journey.response_at(timepoint, today)):
            return response.assessed_on
    return None


def visit_status(
    window_start: date, window_end: date, completed_on: date | None, off_study_on: date | None, today: date
) -> VisitStatus:
    if completed_on is not None:
        return "completed" if window_start <= completed_on <= window_end else "completed_out_of_window"
    if off_study_on is not None and off_study_on <= today and window_end >= off_study_on:
        return "not_applicable"  # leaving the study cancels what is left (a visit missed before stays overdue)
    if today < window_start:
        return "upcoming"
    if today <= window_end:
        return "due"
    return "overdue"


def _planned(visit: PlannedVisit, long_term: bool) -> bool:
    """Long-term visits once the week-12 assessment shows remission; survival contacts otherwise."""
    if visit.kind == "ltfu":
        return long_term
    if visit.kind == "survival":
        return not long_term
    return True


def _scheduled(journey: Journey, visit: PlannedVisit, day0: date, protocol: Protocol, today: date) -> ScheduledVisit:
    target = day0 + timedelta(days=visit.target_day)
    start, end = target - timedelta(days=visit.window_before), target + timedelta(days=visit.window_after)
    if visit.kind == "survival":
        done, ended = _survival_contact_on(journey, visit, start, end, today), journey.survival_followed_until
    else:
        done, ended = _completed_on(journey, visit, protocol, today), journey.off_study_on
    return ScheduledVisit(
        code=visit.code,
        kind=visit.kind,
        study_day=visit.target_day,
        target_date=target,
        window_start=start,
        window_end=end,
        completed_on=done,
        status=visit_status(start, end, done, ended, today),
    )


def schedule(journey: Journey, protocol: Protocol, today: date) -> list[ScheduledVisit]:
    """Planned visits with target date, window and status as of `today`; empty before the infusion."""
    day0 = journey.infused_on
    if day0 is None or day0 > today:
        return []
    long_term = in_long_term_follow_up(journey, today)
    visits = [
        _scheduled(journey, visit, day0, protocol, today)
        for visit in protocol.followup.visits
        if _planned(visit, long_term)
    ]
    return sorted(visits, key=lambda v: (v.target_date, v.code))


def missed(journey: Journey, visit: ScheduledVisit, today: date) -> bool:
    """An overdue visit of a subject now off study: a deviation to review, no longer something to do (a
    survival contact stays to do after the main follow-up was completed)."""
    left = journey.off_study_on
    return visit.status == "overdue" and visit.kind != "survival" and left is not None and left <= today
