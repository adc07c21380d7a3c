"""Follow-up HTTP API: commands, and the read API over the journey projection."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response

from shared.contract.envelope import Envelope
from shared.contract.events import (
    AECorrected,
    AEReported,
    AEUpdated,
    DataQueryAnswered,
    DataQueryClosed,
    LostToFollowUp,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    VisitCompleted,
)
from shared.errors import SubjectNotFound
from shared.http.access import Caller, caller
from shared.http.commands import SubjectPath, add_command
from shared.http.inputs import NeverNull, QueryDate, QueryDatetime
from shared.http.problems import responses
from shared.service import use_case
from shared.time import now_utc, today_utc

from services.followup import history
from services.followup.app import FollowupApplication as App
from services.followup.projections import journey as journeys
from services.followup.projections import reporting, store
from services.followup.projections import schedule as schedules
from services.followup.study import efficacy as efficacy_tables
from services.followup.study import from_journeys as study
from services.followup.study import safety as safety_tables

log = logging.getLogger(__name__)
router = APIRouter(tags=["follow-up"])
read_router = APIRouter(tags=["read"])

COMMANDS = [
    ("adverse-events", AEReported, use_case(App.report_ae, facts=True, protocol=True), "Report an adverse event"),
    ("adverse-event-updates", AEUpdated, use_case(App.update_ae), "Update an AE's grade or outcome"),
    ("adverse-event-corrections", AECorrected, use_case(App.correct_ae, facts=True, protocol=True),
     "Correct an AE report (reason required)"),
    ("query-answers", DataQueryAnswered, use_case(App.answer_query), "Answer a data query"),
    ("query-closures", DataQueryClosed, use_case(App.close_query), "Close an answered data query"),
    ("safety-reports", SafetyReportSubmitted, use_case(App.submit_safety_report),
     "Record an expedited safety report (SAE to sponsor, SUSAR to regulator)"),
    ("response-assessments", ResponseAssessed, use_case(App.assess_response, facts=True, protocol=True),
     "Record a response assessment"),
    ("persistence-samples", PersistenceSampled, use_case(App.record_persistence, facts=True, protocol=True),
     "Record a CAR-T persistence sample"),
    ("visits", VisitCompleted, use_case(App.complete_visit, facts=True, protocol=True), "Record a completed visit"),
    ("subsequent-therapies", SubsequentTherapyStarted, use_case(App.start_subsequent_therapy, facts=True),
     "Record the start of a subsequent therapy (e.g. allo-HSCT)"),
    ("lost-to-follow-up", LostToFollowUp, use_case(App.lose_to_follow_up, facts=True),
     "Declare the subject lost to follow-up"),
    ("study-completion", StudyCompleted, use_case(App.complete_study, facts=True, protocol=True),
     "Record that the subject completed the study"),
    ("death", SubjectDied, use_case(App.record_death, facts=True), "Record the death of a subject"),
]
for path, payload, run, summary in COMMANDS:
    add_command(router, f"/subjects/{{subject_id}}/{path}", payload, run, summary=summary)

OnDate = Annotated[QueryDate, Query(description="Evaluate statuses on this date, YYYY-MM-DD (default: today, "
                                                "UTC).")]
# What each kind of read can answer besides 200.
READ = responses(422, 503)
READ_SUBJECT = responses(404, 422, 503)


def _runtime(request: Request):
    return request.app.state.runtime


async def _journey(request: Request, subject_id: str) -> journeys.Journey:
    rt = _runtime(request)
    found = await store.get(rt.pool, rt.schema, subject_id)
    if found is None:
        raise SubjectNotFound(f"No journey for {subject_id} yet: check the code; a subject appears here a "
                              "moment after its first event.")
    return found


@read_router.get("/subjects", summary="Every subject with its status", responses=READ)
async def list_subjects(request: Request, on: OnDate = None) -> list[dict]:
    rt = _runtime(request)
    today = on or today_utc()
    return [
        {"subject_id": j.subject_id, "site_id": j.site_id, "status": journeys.status(j, today, rt.protocol),
         "study_day": (today - j.infused_on).days if j.infused_on else None}
        for j in await store.all_journeys(rt.pool, rt.schema)
    ]


AsOf = Annotated[QueryDatetime, Query(description="What the system knew at this moment (system time, ISO 8601 "
                                                   "with a UTC offset, e.g. 2026-03-02T09:30:00+01:00).")]
EffectiveOn = Annotated[QueryDate, Query(description="The subject's clinical state on this date, YYYY-MM-DD.")]


async def _journey_at(request: Request, subject_id: str, as_of: datetime | None,
                      effective: date | None) -> tuple[journeys.Journey, date]:
    """The live journey, or one folded from the history when asked for a moment or a date."""
    if as_of is None and effective is None:
        return await _journey(request, subject_id), today_utc()
    async with _runtime(request).pool.acquire() as conn:
        events = await history.subject_history(conn, subject_id)
    if not events:
        raise SubjectNotFound(f"No events for {subject_id}: check the study code.")
    day = effective or (as_of.date() if as_of else today_utc())
    return history.fold(subject_id, history.select(events, as_of, effective)), day


@read_router.get("/subjects/{subject_id}/journey", summary="Status, key dates, AEs, queries, responses",
                 responses=READ_SUBJECT)
async def get_journey(request: Request, subject_id: SubjectPath, on: OnDate = None, as_of: AsOf = None,
                      effective_on: EffectiveOn = None) -> journeys.JourneyView:
    protocol = _runtime(request).protocol
    journey, day = await _journey_at(request, subject_id, as_of, effective_on)
    today = on or day
    view = journeys.view(journey, today, protocol)
    if (safety := study.safety(journey, protocol, today)) is not None:
        view = view.model_copy(update={"dlt_evaluable": safety.dlt_evaluable, "had_dlt": safety.had_dlt})
    return view


@read_router.get("/subjects/{subject_id}/schedule", summary="Planned visits with target date, window and status",
                 responses=READ_SUBJECT)
async def get_schedule(request: Request, subject_id: SubjectPath, on: OnDate = None, as_of: AsOf = None,
                       effective_on: EffectiveOn = None) -> list[schedules.ScheduledVisit]:
    journey, day = await _journey_at(request, subject_id, as_of, effective_on)
    return schedules.schedule(journey, _runtime(request).protocol, on or day)


HISTORY_FORMATS = {"model": list[Envelope], "description": "The events in the format asked for: JSON (default), "
                   "JSON Lines or CSV", "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                                                   "text/csv": {"schema": {"type": "string"}}}}


@read_router.get("/subjects/{subject_id}/history", tags=["audit"],
                 summary="Every event of the subject from all services: who, when, why (JSON, JSON Lines, CSV)",
                 responses={200: HISTORY_FORMATS, **READ_SUBJECT})
async def get_history(request: Request, subject_id: SubjectPath, reader: Annotated[Caller, Depends(caller)],
                      format: Literal["json", "jsonl", "csv"] = "json") -> Response:
    async with _runtime(request).pool.acquire() as conn:
        events = await history.subject_history(conn, subject_id)
    if not events:
        raise SubjectNotFound(f"No events for {subject_id}: check the study code.")
    log.info("history of %s read by %s (%s)", subject_id, reader.user_id, reader.role)
    if format == "jsonl":
        return Response(history.as_jsonl(events), media_type="application/x-ndjson",
                        headers={"Content-Disposition": f'attachment; filename="{subject_id}-history.jsonl"'})
    if format == "csv":
        return Response(history.as_csv(events), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{subject_id}-history.csv"'})
    return JSONResponse([e.model_dump(mode="json") for e in events])


class StudyVisit(schedules.ScheduledVisit):
    subject_id: str
    site_id: str | None


@read_router.get("/followups", summary="Planned visits across the study, e.g. ?status=overdue", responses=READ)
async def list_followups(request: Request, on: OnDate = None,
                         status: Annotated[list[schedules.VisitStatus] | None, NeverNull(), Query()] = None
                         ) -> list[StudyVisit]:
    rt = _runtime(request)
    today = on or today_utc()
    return [StudyVisit(subject_id=j.subject_id, site_id=j.site_id, **visit.model_dump())
            for j in await store.all_journeys(rt.pool, rt.schema)
            for visit in schedules.schedule(j, rt.protocol, today) if not status or visit.status in status]


class StudyQuery(journeys.DataQuery):
    subject_id: str
    site_id: str | None


@read_router.get("/queries", summary="Data queries across the study, e.g. ?status=open", responses=READ)
async def list_queries(request: Request, status: Annotated[list[Literal["open", "answered", "closed"]] | None,
                                                           NeverNull(), Query()] = None) -> list[StudyQuery]:
    rt = _runtime(request)
    return [StudyQuery(subject_id=j.subject_id, site_id=j.site_id, **q.model_dump())
            for j in await store.all_journeys(rt.pool, rt.schema)
            for q in j.queries.values() if not status or q.status in status]


@read_router.get("/safety-reports", summary="Expedited reports due, with overdue flags (SAE 24 h, SUSAR 7/15 days)",
                 responses=READ)
async def list_safety_reports(
    request: Request,
    at: Annotated[QueryDatetime, Query(description="Evaluate at this time, ISO 8601 with a UTC offset (default: "
                                                   "now).")] = None,
    status: Annotated[list[reporting.ReportStatus] | None, NeverNull(), Query()] = None,
) -> list[reporting.ReportDue]:
    rt = _runtime(request)
    now = at or now_utc()
    return [r for j in await store.all_journeys(rt.pool, rt.schema)
            for r in reporting.reports_due(j, rt.protocol, now) if not status or r.status in status]


@read_router.get("/study/safety", summary="DLT rate, CRS and ICANS by maximum grade, AE incidence, SAEs, SUSARs",
                 responses=READ)
async def study_safety(request: Request, on: OnDate = None) -> safety_tables.SafetyTable:
    rt = _runtime(request)
    as_of = on or today_utc()
    summaries = [study.safety(j, rt.protocol, as_of) for j in await store.all_journeys(rt.pool, rt.schema)]
    return safety_tables.safety_table([s for s in summaries if s is not None])


@read_router.get("/study/efficacy", summary="ORR at weeks 4, 8, 12; Kaplan-Meier OS, PFS and DOR", responses=READ)
async def study_efficacy(request: Request, on: OnDate = None) -> efficacy_tables.EfficacyTable:
    rt = _runtime(request)
    as_of = on or today_utc()
    outcomes = [study.outcome(j, as_of) for j in await store.all_journeys(rt.pool, rt.schema)]
    return efficacy_tables.efficacy_table([o for o in outcomes if o is not None], as_of)
