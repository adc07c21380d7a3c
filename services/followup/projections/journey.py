"""A subject's journey: folded from events of every source, in whatever order the topics deliver.

Each event sets its own facts, so the fold does not depend on the order of events *across* sources
(Kafka orders them only within one source's topic). Status and study day depend on the date they are
asked for and are derived on read.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, Field

from shared.contract.envelope import Envelope
from shared.contract.events import (
    AEReported,
    ConsentWithdrawn,
    Enrolled,
    LymphodepletionGiven,
    Payload,
    ResponseAssessed,
    ScreenFailed,
    SubjectDied,
    UCARTInfused,
    VisitCompleted,
)
from shared.protocol import Protocol

Status = Literal[
    "screening", "screen_failed", "enrolled", "lymphodepleting", "infused", "follow_up",
    "long_term_follow_up", "completed", "withdrawn", "died",
]
RESPONSE_RANK = {"CR": 3, "CRi": 2, "NR": 1, "RELAPSE": 0}
REMISSION = ("CR", "CRi")


class Response(BaseModel):
    timepoint: str
    response: str
    assessed_on: date
    marrow_blasts_pct: float
    mrd_negative: bool | None = None


class Journey(BaseModel):
    """Stored state (JSON) of one subject."""

    subject_id: str
    site_id: str | None = None
    screen_failed_on: date | None = None
    consent_signed_on: date | None = None
    enrolled_on: date | None = None
    withdrawn_on: date | None = None
    lymphodepletion_days: list[date] = Field(default_factory=list)
    infused_at: datetime | None = None
    dose_cells_per_kg: float | None = None
    worst_crs_grade: int | None = None
    worst_icans_grade: int | None = None
    ae_count: int = 0
    serious_ae_count: int = 0
    responses: list[Response] = Field(default_factory=list)
    visits_completed: dict[str, date] = Field(default_factory=dict)
    died_on: date | None = None

    @property
    def infused_on(self) -> date | None:
        return self.infused_at.date() if self.infused_at else None

    def response_at(self, timepoint: str, on: date | None = None) -> Response | None:
        """The assessment at `timepoint`, if there is one (assessed on or before `on`, if given)."""
        return next((r for r in self.responses
                     if r.timepoint == timepoint and (on is None or r.assessed_on <= on)), None)

    @property
    def off_study_on(self) -> date | None:
        return self.died_on or self.withdrawn_on


def _worst(current: int | None, grade: int) -> int:
    return grade if current is None else max(current, grade)


def apply(journey: Journey, envelope: Envelope, payload: Payload) -> Journey:
    """Return the journey with one more event folded in (the input is not modified)."""
    j = journey.model_copy(deep=True)
    on = envelope.occurred_at.date()
    match payload:
        case Enrolled():
            j.site_id, j.enrolled_on, j.consent_signed_on = payload.site_id, on, payload.consent_signed_on
        case ScreenFailed():
            j.site_id, j.screen_failed_on = payload.site_id, on
        case ConsentWithdrawn():
            j.withdrawn_on = on
        case LymphodepletionGiven():
            j.lymphodepletion_days = sorted({*j.lymphodepletion_days, on})
        case UCARTInfused():
            j.infused_at, j.dose_cells_per_kg = envelope.occurred_at, payload.dose_cells_per_kg
        case AEReported():
            j.ae_count += 1
            j.serious_ae_count += payload.serious
            if payload.category == "CRS":
                j.worst_crs_grade = _worst(j.worst_crs_grade, payload.grade)
            elif payload.category == "ICANS":
                j.worst_icans_grade = _worst(j.worst_icans_grade, payload.grade)
        case ResponseAssessed():
            j.responses = sorted(
                [*j.responses, Response(timepoint=payload.timepoint, response=payload.response, assessed_on=on,
                                        marrow_blasts_pct=payload.marrow_blasts_pct,
                                        mrd_negative=payload.mrd_negative)],
                key=lambda r: r.assessed_on,
            )
        case VisitCompleted():
            j.visits_completed[payload.visit_code] = on
        case SubjectDied():
            j.died_on = on
    return j


def in_long_term_follow_up(journey: Journey, on: date | None = None) -> bool:
    """Long-term follow-up is for subjects in remission at the week-12 assessment."""
    w12 = journey.response_at("W12", on)
    return w12 is not None and w12.response in REMISSION


def _by(day: date | None, today: date) -> bool:
    return day is not None and day <= today


def status(journey: Journey, today: date, protocol: Protocol) -> Status:
    """The subject's state on `today`: only what had happened (clinically) by then counts."""
    fu = protocol.followup
    if _by(journey.died_on, today):
        return "died"
    if _by(journey.withdrawn_on, today):
        return "withdrawn"
    if _by(journey.screen_failed_on, today):
        return "screen_failed"
    if _by(journey.infused_on, today):
        day = (today - journey.infused_on).days
        if day <= protocol.dlt.window_days:
            return "infused"
        if day <= fu.main_followup_end_day or journey.response_at("W12", today) is None:
            return "follow_up"  # until the week-12 assessment is in
        if in_long_term_follow_up(journey, today) and day <= fu.long_term_end_day:
            return "long_term_follow_up"
        return "completed"
    if any(_by(d, today) for d in journey.lymphodepletion_days):
        return "lymphodepleting"
    if _by(journey.enrolled_on, today):
        return "enrolled"
    return "screening"


class JourneyView(BaseModel):
    """What `GET /subjects/{id}/journey` answers."""

    subject_id: str
    site_id: str | None
    status: Status
    as_of: date
    study_day: int | None = Field(description="Days since the infusion (day 0); None before it.")
    enrolled_on: date | None
    consent_signed_on: date | None
    lymphodepletion_days: list[date]
    infused_on: date | None
    dose_cells_per_kg: float | None
    withdrawn_on: date | None
    died_on: date | None
    worst_crs_grade: int | None
    worst_icans_grade: int | None
    ae_count: int
    serious_ae_count: int
    best_response: Response | None
    latest_response: Response | None


def view(journey: Journey, today: date, protocol: Protocol) -> JourneyView:
    best = max(journey.responses, key=lambda r: (RESPONSE_RANK[r.response], -r.assessed_on.toordinal()),
               default=None)
    return JourneyView(
        subject_id=journey.subject_id,
        site_id=journey.site_id,
        status=status(journey, today, protocol),
        as_of=today,
        study_day=(today - journey.infused_on).days if journey.infused_on else None,
        enrolled_on=journey.enrolled_on,
        consent_signed_on=journey.consent_signed_on,
        lymphodepletion_days=journey.lymphodepletion_days,
        infused_on=journey.infused_on,
        dose_cells_per_kg=journey.dose_cells_per_kg,
        withdrawn_on=journey.withdrawn_on,
        died_on=journey.died_on,
        worst_crs_grade=journey.worst_crs_grade,
        worst_icans_grade=journey.worst_icans_grade,
        ae_count=journey.ae_count,
        serious_ae_count=journey.serious_ae_count,
        best_response=best,
        latest_response=journey.responses[-1] if journey.responses else None,
    )
