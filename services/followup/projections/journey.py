"""A subject's journey: folded from events of every source, in whatever order the topics deliver.

Each event sets its own facts, so the fold does not depend on the order of events *across* sources
(Kafka orders them only within one source's topic). Status and study day depend on the date they are
asked for and are derived on read.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, Field

from shared import clinical
from shared.contract.envelope import Envelope
from shared.contract.events import (
    AECorrected,
    AEFields,
    AEReported,
    AEUpdated,
    ConsentWithdrawn,
    DataQueryAnswered,
    DataQueryClosed,
    DataQueryOpened,
    Enrolled,
    InfusionCorrected,
    LongTermFollowUpStarted,
    LostToFollowUp,
    LymphodepletionGiven,
    Payload,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    ScreenFailed,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    UCARTInfused,
    VisitCompleted,
)
from shared.protocol import Protocol

Status = Literal[
    "screening",
    "screen_failed",
    "enrolled",
    "lymphodepleting",
    "infused",
    "follow_up",
    "long_term_follow_up",
    "completed",
    "withdrawn",
    "lost_to_follow_up",
    "died",
]
RESPONSE_RANK = {"CR": 3, "CRi": 2, "NR": 1, "RELAPSE": 0}


class Response(BaseModel):
    timepoint: str
    response: str
    assessed_on: date
    marrow_blasts_pct: float
    mrd_negative: bool | None = None
    mrd_pct: float | None = None
    anc_10e9_per_l: float | None = None
    platelets_10e9_per_l: float | None = None
    cd19_status: str | None = None


class AdverseEvent(BaseModel):
    ae_id: UUID
    report: AEFields  # as reported, or as last corrected
    onset_on: date
    grade: int  # current grade (after updates)
    worst_grade: int  # the worst of the (corrected) report and every update since the onset
    update_grades: list[int] = Field(default_factory=list)
    outcome: str | None = None
    corrections: int = 0
    previous_reports: list[AEFields] = Field(default_factory=list)  # what each correction replaced, oldest first
    reports_submitted: dict[str, datetime] = Field(default_factory=dict)  # report kind -> received_at


class DataQuery(BaseModel):
    query_id: UUID
    ae_id: UUID | None
    field: str
    recorded_value: str
    expected_value: str
    text: str
    opened_at: datetime
    status: Literal["open", "answered", "closed"] = "open"
    answer: str | None = None
    resolution: str | None = None


class PersistenceSample(BaseModel):
    sampled_on: date
    visit_code: str | None
    qpcr_copies_per_ug_dna: float | None
    flow_car_pct_of_cd3: float | None


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
    infusion_corrected_from: list[datetime] = Field(default_factory=list)  # earlier infusion times
    dose_cells_per_kg: float | None = None
    adverse_events: dict[str, AdverseEvent] = Field(default_factory=dict)
    queries: dict[str, DataQuery] = Field(default_factory=dict)
    responses: list[Response] = Field(default_factory=list)
    persistence: list[PersistenceSample] = Field(default_factory=list)
    visits_completed: dict[str, date] = Field(default_factory=dict)
    subsequent_therapy: list[tuple[str, date]] = Field(default_factory=list)
    long_term_follow_up_on: date | None = None
    lost_to_follow_up_on: date | None = None
    last_contact_on: date | None = None  # as declared when lost to follow-up
    completed_on: date | None = None
    died_on: date | None = None
    last_event_on: date | None = None  # latest clinical date seen (last known alive, unless died)

    @property
    def infused_on(self) -> date | None:
        return self.infused_at.date() if self.infused_at else None

    def response_at(self, timepoint: str, on: date | None = None) -> Response | None:
        """The assessment at `timepoint`, if there is one (assessed on or before `on`, if given)."""
        return next(
            (r for r in self.responses if r.timepoint == timepoint and (on is None or r.assessed_on <= on)), None
        )

    @property
    def off_study_on(self) -> date | None:
        dates = [d for d in (self.died_on, self.withdrawn_on, self.lost_to_follow_up_on, self.completed_on) if d]
        return min(dates) if dates else None

    def worst_grade(self, category: str) -> int | None:
        grades = [ae.worst_grade for ae in self.adverse_events.values() if ae.report.category == category]
        return max(grades, default=None)


def apply(journey: Journey, envelope: Envelope, payload: Payload) -> Journey:
    """Return the journey with one more event folded in (the input is not modified)."""
    j = journey.model_copy(deep=True)
    at = envelope.occurred_at
    on = at.date()
    if not clinical.administrative(payload.event_type):
        j.last_event_on = max(j.last_event_on or on, on)
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
            j.infused_at, j.dose_cells_per_kg = at, payload.dose_cells_per_kg
        case InfusionCorrected():
            if j.infused_at:
                j.infusion_corrected_from.append(j.infused_at)
            j.infused_at, j.dose_cells_per_kg = at, payload.dose_cells_per_kg
        case AEReported():
            j.adverse_events[str(payload.ae_id)] = AdverseEvent(
                ae_id=payload.ae_id,
                report=AEFields(**payload.model_dump(exclude={"ae_id"})),
                onset_on=on,
                grade=payload.grade,
                worst_grade=payload.grade,
            )
        case AECorrected():
            ae = j.adverse_events.get(str(payload.ae_id))
            if ae:  # the correction replaces the report; updates since keep their grades
                ae.previous_reports.append(ae.report)
                ae.report = AEFields(**payload.model_dump(exclude={"ae_id"}))
                ae.onset_on = on  # a correction's occurred_at is the (corrected) onset, as for the report
                ae.grade, ae.corrections = payload.grade, ae.corrections + 1
                ae.worst_grade = max([payload.grade, *ae.update_grades])
        case AEUpdated():
            ae = j.adverse_events.get(str(payload.ae_id))
            if ae:
                if payload.grade is not None:
                    ae.update_grades.append(payload.grade)
                    ae.grade, ae.worst_grade = payload.grade, max(ae.worst_grade, payload.grade)
                ae.outcome = payload.outcome or ae.outcome
        case SafetyReportSubmitted():
            ae = j.adverse_events.get(str(payload.ae_id))
            if ae:
                ae.reports_submitted[payload.report] = payload.received_at
        case DataQueryOpened():
            j.queries[str(payload.query_id)] = DataQuery(
                opened_at=envelope.recorded_at, **payload.model_dump(exclude={"query_id"}), query_id=payload.query_id
            )
        case DataQueryAnswered():
            if q := j.queries.get(str(payload.query_id)):
                q.status, q.answer = "answered", payload.answer
        case DataQueryClosed():
            if q := j.queries.get(str(payload.query_id)):
                q.status, q.resolution = "closed", payload.resolution
        case ResponseAssessed():
            j.responses = sorted(
                [
                    *j.responses,
                    Response(
                        assessed_on=on, **payload.model_dump(include=set(Response.model_fields) - {"assessed_on"})
                    ),
                ],
                key=lambda r: r.assessed_on,
            )
        case PersistenceSampled():
            j.persistence.append(PersistenceSample(sampled_on=on, **payload.model_dump()))
            if payload.visit_code:
                j.visits_completed[payload.visit_code] = on
        case VisitCompleted():
            j.visits_completed[payload.visit_code] = on
        case SubsequentTherapyStarted():
            j.subsequent_therapy = sorted([*j.subsequent_therapy, (payload.therapy, on)], key=lambda t: t[1])
        case LongTermFollowUpStarted():
            j.long_term_follow_up_on = on
        case LostToFollowUp():
            j.lost_to_follow_up_on, j.last_contact_on = on, payload.last_contact_on
        case StudyCompleted():
            j.completed_on = on
        case SubjectDied():
            j.died_on = on
    return j


def in_long_term_follow_up(journey: Journey, on: date | None = None) -> bool:
    """Long-term follow-up is for subjects in remission at the week-12 assessment."""
    w12 = journey.response_at("W12", on)
    return clinical.enters_long_term_follow_up(w12.response if w12 else None)


def _by(day: date | None, today: date) -> bool:
    return day is not None and day <= today


def status(journey: Journey, today: date, protocol: Protocol) -> Status:
    """The subject's state on `today`: only what had happened (clinically) by then counts."""
    fu = protocol.followup
    exits: tuple[tuple[Status, date | None], ...] = (
        ("died", journey.died_on),
        ("withdrawn", journey.withdrawn_on),
        ("lost_to_follow_up", journey.lost_to_follow_up_on),
        ("completed", journey.completed_on),
        ("screen_failed", journey.screen_failed_on),
    )
    for exit_status, on in exits:
        if _by(on, today):
            return exit_status
    if journey.infused_on is not None and journey.infused_on <= today:
        day = (today - journey.infused_on).days
        if day <= protocol.dlt.window_days:
            return "infused"
        if day <= fu.main_followup_end_day or journey.response_at("W12", today) is None:
            return "follow_up"  # until the week-12 assessment is in
        if in_long_term_follow_up(journey, today):
            return "long_term_follow_up"  # until StudyCompleted (due at month 12)
        return "follow_up"  # week 12 not in remission: due to complete the main follow-up
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
    infusion_corrected_from: list[datetime]
    dose_cells_per_kg: float | None
    withdrawn_on: date | None
    lost_to_follow_up_on: date | None
    completed_on: date | None
    died_on: date | None
    long_term_follow_up_on: date | None
    worst_crs_grade: int | None
    worst_icans_grade: int | None
    ae_count: int
    serious_ae_count: int
    open_queries: int
    best_response: Response | None
    latest_response: Response | None
    subsequent_therapy: list[tuple[str, date]]
    dlt_evaluable: bool | None = Field(default=None, description="None before the infusion.")
    had_dlt: bool | None = None
    adverse_events: list[AdverseEvent]
    queries: list[DataQuery]
    persistence: list[PersistenceSample]


def view(journey: Journey, today: date, protocol: Protocol) -> JourneyView:
    best = max(journey.responses, key=lambda r: (RESPONSE_RANK[r.response], -r.assessed_on.toordinal()), default=None)
    aes = sorted(journey.adverse_events.values(), key=lambda a: (a.onset_on, str(a.ae_id)))
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
        infusion_corrected_from=journey.infusion_corrected_from,
        dose_cells_per_kg=journey.dose_cells_per_kg,
        withdrawn_on=journey.withdrawn_on,
        lost_to_follow_up_on=journey.lost_to_follow_up_on,
        completed_on=journey.completed_on,
        died_on=journey.died_on,
        long_term_follow_up_on=journey.long_term_follow_up_on,
        worst_crs_grade=journey.worst_grade("CRS"),
        worst_icans_grade=journey.worst_grade("ICANS"),
        ae_count=len(aes),
        serious_ae_count=sum(a.report.serious for a in aes),
        open_queries=sum(q.status != "closed" for q in journey.queries.values()),
        best_response=best,
        latest_response=journey.responses[-1] if journey.responses else None,
        subsequent_therapy=journey.subsequent_therapy,
        adverse_events=aes,
        queries=sorted(journey.queries.values(), key=lambda q: q.opened_at),
        persistence=journey.persistence,
    )
