"""A subject's journey: folded from events of every source, in whatever order the topics deliver.

Each event sets its own facts, so the fold does not depend on the order of events *across* sources
(Kafka orders them only within one source's topic). Every fact keeps its clinical date, so anything
"as of a date D" (status, study day, grades, the last date known alive, the view) is derived on read
from what had happened by D: an event dated after D changes nothing about D.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, NamedTuple
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
    DataQueryUpdated,
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
    SurvivalStatusRecorded,
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
# Best response: remission first; progression (a relapse, or progressive disease) ranks below no response.
RESPONSE_RANK = {"CR": 3, "CRi": 2, "NR": 1, "RELAPSE": 0, "PD": 0}


def _known_by(day: date | None, on: date) -> bool:
    """The dated fact had happened by `on`."""
    return day is not None and day <= on


def _up_to(day: date, on: date | None) -> bool:
    """Dated on or before `on` (None: whatever was recorded)."""
    return on is None or day <= on


class Response(BaseModel):
    timepoint: str
    response: str
    assessed_on: date
    marrow_blasts_pct: float
    circulating_blasts_pct: float | None = None
    mrd_negative: bool | None = None
    mrd_pct: float | None = None
    anc_10e9_per_l: float | None = None
    platelets_10e9_per_l: float | None = None
    cd19_status: str | None = None


class GradeReached(BaseModel):
    grade: int
    reached_on: date


class AEUpdate(BaseModel):
    """One AEUpdated, on the date it says the change happened."""

    on: date
    grade: int | None = None
    outcome: str | None = None


class AdverseEvent(BaseModel):
    ae_id: UUID
    report: AEFields  # as reported, or as last corrected; its grade is the grade at the onset
    onset_on: date
    updates: list[AEUpdate] = Field(default_factory=list)  # in the order recorded; a correction keeps them
    corrections: int = 0
    previous_reports: list[AEFields] = Field(default_factory=list)  # what each correction replaced, oldest first
    reports_submitted: dict[str, datetime] = Field(default_factory=dict)  # report kind -> received_at

    def grade_history(self, on: date | None = None) -> list[GradeReached]:
        """Each grade with the day it was reached, oldest first, up to `on`: the report's at the onset,
        then each update's. An update dated before a corrected onset counts from the onset."""
        reached = [GradeReached(grade=self.report.grade, reached_on=self.onset_on)] + [
            GradeReached(grade=u.grade, reached_on=max(u.on, self.onset_on))
            for u in self.updates
            if u.grade is not None
        ]
        in_date_order = sorted(reached, key=lambda g: g.reached_on)  # stable: the order recorded within a day
        return [g for g in in_date_order if _up_to(g.reached_on, on)]

    def grade_on(self, on: date | None = None) -> int | None:
        """The grade on `on` (None before the onset)."""
        history = self.grade_history(on)
        return history[-1].grade if history else None

    def worst_grade_by(self, on: date | None = None) -> int | None:
        return max((g.grade for g in self.grade_history(on)), default=None)

    def worst_grade_within(self, first: date, last: date) -> int | None:
        """The worst grade reached on a day from `first` to `last` (a grade reached before stays out)."""
        return max((g.grade for g in self.grade_history(last) if g.reached_on >= first), default=None)

    def outcome_on(self, on: date | None = None) -> str | None:
        """The latest outcome by date, up to `on`."""
        dated = sorted((u for u in self.updates if u.outcome and _up_to(u.on, on)), key=lambda u: u.on)
        return dated[-1].outcome if dated else None


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


class SurvivalContact(BaseModel):
    contacted_on: date
    status: Literal["alive", "dead"]
    method: str
    visit_code: str | None = None
    died_on: date | None = None  # the news of a death: when it happened
    primary_cause: str | None = None


class KnownAlive(NamedTuple):
    """The subject was alive on `alive_on`, as known from `known_on` (the same day for a record of the
    subject; the day of the declaration for the last contact a loss to follow-up gives)."""

    alive_on: date
    known_on: date

    def by(self, on: date) -> bool:
        """Known on `on`, about a day up to it: what a data cut at `on` may use."""
        return self.known_on <= on and self.alive_on <= on


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
    responses: list[Response] = Field(default_factory=list)  # in date order
    persistence: list[PersistenceSample] = Field(default_factory=list)
    visits_completed: dict[str, date] = Field(default_factory=dict)
    subsequent_therapy: list[tuple[str, date]] = Field(default_factory=list)
    survival_contacts: list[SurvivalContact] = Field(default_factory=list)  # in date order
    long_term_follow_up_on: date | None = None
    lost_to_follow_up_on: date | None = None
    last_contact_on: date | None = None  # as declared when lost to follow-up
    completed_on: date | None = None
    died_on: date | None = None
    # Days with a clinical record of the subject, each with how many records are dated then: a correction
    # moves its record to the corrected date.
    records_per_day: dict[date, int] = Field(default_factory=dict)

    @property
    def infused_on(self) -> date | None:
        return self.infused_at.date() if self.infused_at else None

    def response_at(self, timepoint: str, on: date | None = None) -> Response | None:
        """The assessment at `timepoint`, if there is one (assessed on or before `on`, if given)."""
        return next((r for r in self.responses if r.timepoint == timepoint and _up_to(r.assessed_on, on)), None)

    def responses_by(self, on: date) -> list[Response]:
        return [r for r in self.responses if r.assessed_on <= on]

    @property
    def off_study_on(self) -> date | None:
        dates = [d for d in (self.died_on, self.withdrawn_on, self.lost_to_follow_up_on, self.completed_on) if d]
        return min(dates) if dates else None

    @property
    def survival_followed_until(self) -> date | None:
        """When survival follow-up ended: death, withdrawal or loss (completing the study does not end it)."""
        return min((d for d in (self.died_on, self.withdrawn_on, self.lost_to_follow_up_on) if d), default=None)

    @property
    def treatment_started_on(self) -> date | None:
        """The first lymphodepletion day; the infusion day if no lymphodepletion is recorded."""
        return self.lymphodepletion_days[0] if self.lymphodepletion_days else self.infused_on

    def treatment_emergent(self, ae: AdverseEvent) -> bool:
        """Onset on or after the start of treatment (DOMAIN.md: from the first lymphodepletion day)."""
        return self.treatment_started_on is not None and ae.onset_on >= self.treatment_started_on

    def adverse_events_by(self, on: date) -> list[AdverseEvent]:
        """The AEs with onset by `on`, in onset order."""
        aes = (a for a in self.adverse_events.values() if a.onset_on <= on)
        return sorted(aes, key=lambda a: (a.onset_on, str(a.ae_id)))

    def worst_grade(self, category: str, on: date | None = None) -> int | None:
        grades = (ae.worst_grade_by(on) for ae in self.adverse_events.values() if ae.report.category == category)
        return max((g for g in grades if g is not None), default=None)

    def known_alive(self) -> list[KnownAlive]:
        """Every date the subject is known alive: each day with a clinical record, and the last contact a
        loss to follow-up declares (known from the declaration)."""
        records = [KnownAlive(d, d) for d in sorted(self.records_per_day)]
        if self.lost_to_follow_up_on and self.last_contact_on:
            records.append(KnownAlive(self.last_contact_on, self.lost_to_follow_up_on))
        return records

    def last_known_alive(self, on: date) -> date | None:
        """The latest date the subject is known alive from what had happened by `on` (never `on` itself
        unless something is dated then); the day of death for a subject who had died by then."""
        if _known_by(self.died_on, on):
            return self.died_on
        return max((k.alive_on for k in self.known_alive() if k.by(on)), default=None)


def _count_record(j: Journey, day: date, change: int) -> None:
    count = j.records_per_day.get(day, 0) + change
    if count > 0:
        j.records_per_day[day] = count
    else:
        j.records_per_day.pop(day, None)


def apply(journey: Journey, envelope: Envelope, payload: Payload) -> Journey:
    """Return the journey with one more event folded in (the input is not modified)."""
    j = journey.model_copy(deep=True)
    fold(j, envelope, payload)
    return j


def fold(j: Journey, envelope: Envelope, payload: Payload) -> None:
    """Fold one more event into the journey, in place (a batch folds its events into journeys it owns)."""
    at = envelope.occurred_at
    on = at.date()
    if payload.is_clinical_record():
        _count_record(j, on, +1)
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
                _count_record(j, j.infused_at.date(), -1)  # the infusion's record moves to the corrected date
            j.infused_at, j.dose_cells_per_kg = at, payload.dose_cells_per_kg
        case AEReported():
            j.adverse_events[str(payload.ae_id)] = AdverseEvent(
                ae_id=payload.ae_id, report=AEFields(**payload.model_dump(exclude={"ae_id"})), onset_on=on
            )
        case AECorrected():
            if ae := j.adverse_events.get(str(payload.ae_id)):  # it replaces the report; updates keep their grades
                _count_record(j, ae.onset_on, -1)  # the report's record moves to the corrected onset
                ae.previous_reports.append(ae.report)
                ae.report = AEFields(**payload.model_dump(exclude={"ae_id"}))
                ae.onset_on = on  # a correction's occurred_at is the (corrected) onset, as for the report
                ae.corrections += 1
        case AEUpdated():
            if ae := j.adverse_events.get(str(payload.ae_id)):
                ae.updates.append(AEUpdate(on=on, grade=payload.grade, outcome=payload.outcome))
        case SafetyReportSubmitted():
            if ae := j.adverse_events.get(str(payload.ae_id)):
                ae.reports_submitted[payload.report] = payload.received_at
        case DataQueryOpened():
            j.queries[str(payload.query_id)] = DataQuery(
                opened_at=envelope.recorded_at, **payload.model_dump(exclude={"query_id"}), query_id=payload.query_id
            )
        case DataQueryUpdated():
            if q := j.queries.get(str(payload.query_id)):  # restated: it needs an answer again
                q.recorded_value, q.expected_value = payload.recorded_value, payload.expected_value
                q.text, q.status, q.answer = payload.text, "open", None
        case DataQueryAnswered():
            if q := j.queries.get(str(payload.query_id)):
                q.status, q.answer = "answered", payload.answer
        case DataQueryClosed():
            if q := j.queries.get(str(payload.query_id)):
                q.status, q.resolution = "closed", payload.resolution
        case ResponseAssessed():
            response = Response(assessed_on=on, **payload.model_dump(include=set(Response.model_fields)))
            j.responses = sorted([*j.responses, response], key=lambda r: r.assessed_on)
        case PersistenceSampled():
            j.persistence.append(PersistenceSample(sampled_on=on, **payload.model_dump()))
            if payload.visit_code:
                j.visits_completed[payload.visit_code] = on
        case VisitCompleted():
            j.visits_completed[payload.visit_code] = on
        case SubsequentTherapyStarted():
            j.subsequent_therapy = sorted([*j.subsequent_therapy, (payload.therapy, on)], key=lambda t: t[1])
        case SurvivalStatusRecorded():
            contact = SurvivalContact(contacted_on=on, **payload.model_dump(include=set(SurvivalContact.model_fields)))
            j.survival_contacts = sorted([*j.survival_contacts, contact], key=lambda c: c.contacted_on)
        case LongTermFollowUpStarted():
            j.long_term_follow_up_on = on
        case LostToFollowUp():
            j.lost_to_follow_up_on, j.last_contact_on = on, payload.last_contact_on
        case StudyCompleted():
            j.completed_on = on
        case SubjectDied():
            j.died_on = on


def in_long_term_follow_up(journey: Journey, on: date | None = None) -> bool:
    """Long-term follow-up is for subjects in remission at the week-12 assessment."""
    w12 = journey.response_at("W12", on)
    return clinical.enters_long_term_follow_up(w12.response if w12 else None)


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
        if _known_by(on, today):
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
    if any(_known_by(d, today) for d in journey.lymphodepletion_days):
        return "lymphodepleting"
    if _known_by(journey.enrolled_on, today):
        return "enrolled"
    return "screening"


def best_response(journey: Journey, on: date) -> Response | None:
    """The best response assessed by `on` (the earliest of equal rank)."""
    return max(
        journey.responses_by(on), key=lambda r: (RESPONSE_RANK[r.response], -r.assessed_on.toordinal()), default=None
    )


class AEView(BaseModel):
    """An AE as of the view's date: its grades reached by then."""

    ae_id: UUID
    report: AEFields
    onset_on: date
    treatment_emergent: bool = Field(description="Onset on or after the first lymphodepletion day.")
    grade: int = Field(description="The grade on the view's date.")
    worst_grade: int = Field(description="The worst grade reached by the view's date.")
    grade_history: list[GradeReached] = Field(description="Each grade and the day it was reached, oldest first.")
    outcome: str | None
    corrections: int
    previous_reports: list[AEFields]
    reports_submitted: dict[str, datetime]


def ae_view(journey: Journey, ae: AdverseEvent, on: date) -> AEView:
    history = ae.grade_history(on)
    return AEView(
        ae_id=ae.ae_id,
        report=ae.report,
        onset_on=ae.onset_on,
        treatment_emergent=journey.treatment_emergent(ae),
        grade=history[-1].grade,
        worst_grade=max(g.grade for g in history),
        grade_history=history,
        outcome=ae.outcome_on(on),
        corrections=ae.corrections,
        previous_reports=ae.previous_reports,
        reports_submitted=ae.reports_submitted,
    )


class JourneyView(BaseModel):
    """What `GET /subjects/{id}/journey` answers: the subject as of `as_of` (what had happened by then).
    Data queries and safety reports are records about the data: they show as they stand."""

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
    last_known_alive: date | None = Field(
        description="The latest clinical record or survival contact by as_of (or the declared last contact of a "
        "subject lost to follow-up); the day of death for a subject who died."
    )
    long_term_follow_up_on: date | None
    worst_crs_grade: int | None
    worst_icans_grade: int | None
    ae_count: int
    serious_ae_count: int
    open_queries: int
    best_response: Response | None
    latest_response: Response | None
    responses: list[Response]
    subsequent_therapy: list[tuple[str, date]]
    survival_contacts: list[SurvivalContact]
    dlt_evaluable: bool | None = Field(default=None, description="None before the infusion.")
    had_dlt: bool | None = None
    adverse_events: list[AEView]
    queries: list[DataQuery]
    persistence: list[PersistenceSample]


def view(journey: Journey, today: date, protocol: Protocol) -> JourneyView:
    def known(day: date | None) -> date | None:
        return day if _known_by(day, today) else None

    infused_on, enrolled_on = known(journey.infused_on), known(journey.enrolled_on)
    responses = journey.responses_by(today)
    aes = [ae_view(journey, ae, today) for ae in journey.adverse_events_by(today)]
    return JourneyView(
        subject_id=journey.subject_id,
        site_id=journey.site_id,
        status=status(journey, today, protocol),
        as_of=today,
        study_day=(today - infused_on).days if infused_on else None,
        enrolled_on=enrolled_on,
        consent_signed_on=journey.consent_signed_on if enrolled_on else None,
        lymphodepletion_days=[d for d in journey.lymphodepletion_days if d <= today],
        infused_on=infused_on,
        infusion_corrected_from=journey.infusion_corrected_from if infused_on else [],
        dose_cells_per_kg=journey.dose_cells_per_kg if infused_on else None,
        withdrawn_on=known(journey.withdrawn_on),
        lost_to_follow_up_on=known(journey.lost_to_follow_up_on),
        completed_on=known(journey.completed_on),
        died_on=known(journey.died_on),
        last_known_alive=journey.last_known_alive(today),
        long_term_follow_up_on=known(journey.long_term_follow_up_on),
        worst_crs_grade=journey.worst_grade("CRS", today),
        worst_icans_grade=journey.worst_grade("ICANS", today),
        ae_count=len(aes),
        serious_ae_count=sum(a.report.serious for a in aes),
        open_queries=sum(q.status != "closed" for q in journey.queries.values()),
        best_response=best_response(journey, today),
        latest_response=responses[-1] if responses else None,
        responses=responses,
        subsequent_therapy=[t for t in journey.subsequent_therapy if t[1] <= today],
        survival_contacts=[c for c in journey.survival_contacts if c.contacted_on <= today],
        adverse_events=aes,
        queries=sorted(journey.queries.values(), key=lambda q: q.opened_at),
        persistence=[p for p in journey.persistence if p.sampled_on <= today],
    )
