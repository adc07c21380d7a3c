"""Follow-up HTTP API: commands (AEs, responses, visits, death) and the read API over projections."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query, Request

from shared import facts
from shared.contract.events import AEReported, ResponseAssessed, SubjectDied, VisitCompleted
from shared.errors import SubjectNotFound
from shared.contract.envelope import Envelope
from shared.eventstore import EventMeta
from shared.http.commands import SubjectPath, add_command
from shared.service import Runtime
from shared.time import today_utc

from services.followup.projections import journey as journeys
from services.followup.projections import schedule as schedules
from services.followup.projections import store

router = APIRouter(tags=["follow-up"])
read_router = APIRouter(tags=["read"])


async def _ae(rt: Runtime, meta: EventMeta, payload: AEReported) -> list[Envelope]:
    return await rt.call(rt.app.report_ae, meta, payload, await facts.load(rt.pool, rt.schema, meta.subject_id))


async def _response(rt: Runtime, meta: EventMeta, payload: ResponseAssessed) -> list[Envelope]:
    known = await facts.load(rt.pool, rt.schema, meta.subject_id)
    return await rt.call(rt.app.assess_response, meta, payload, known)


async def _visit(rt: Runtime, meta: EventMeta, payload: VisitCompleted) -> list[Envelope]:
    known = await facts.load(rt.pool, rt.schema, meta.subject_id)
    return await rt.call(rt.app.complete_visit, meta, payload, known, rt.protocol)


async def _death(rt: Runtime, meta: EventMeta, payload: SubjectDied) -> list[Envelope]:
    known = await facts.load(rt.pool, rt.schema, meta.subject_id)
    return await rt.call(rt.app.record_death, meta, payload, known)


add_command(router, "/subjects/{subject_id}/adverse-events", AEReported, _ae, summary="Report an adverse event")
add_command(router, "/subjects/{subject_id}/response-assessments", ResponseAssessed, _response,
            summary="Record a response assessment")
add_command(router, "/subjects/{subject_id}/visits", VisitCompleted, _visit, summary="Record a completed visit")
add_command(router, "/subjects/{subject_id}/death", SubjectDied, _death, summary="Record the death of a subject")

OnDate = Annotated[date | None, Query(description="Evaluate statuses on this date (default: today, UTC).")]


async def _journey(request: Request, subject_id: str) -> journeys.Journey:
    rt = request.app.state.runtime
    found = await store.get(rt.pool, rt.schema, subject_id)
    if found is None:
        raise SubjectNotFound(f"No journey for {subject_id} yet: check the code; a subject appears here a "
                              "moment after its first event.")
    return found


@read_router.get("/subjects", summary="Every subject with its status")
async def list_subjects(request: Request, on: OnDate = None) -> list[dict]:
    rt = request.app.state.runtime
    today = on or today_utc()
    return [
        {"subject_id": j.subject_id, "site_id": j.site_id, "status": journeys.status(j, today, rt.protocol),
         "study_day": (today - j.infused_on).days if j.infused_on else None}
        for j in await store.all_journeys(rt.pool, rt.schema)
    ]


@read_router.get("/subjects/{subject_id}/journey", summary="Status, key dates, worst CRS/ICANS, responses")
async def get_journey(request: Request, subject_id: SubjectPath, on: OnDate = None) -> journeys.JourneyView:
    rt = request.app.state.runtime
    return journeys.view(await _journey(request, subject_id), on or today_utc(), rt.protocol)


@read_router.get("/subjects/{subject_id}/schedule", summary="Planned visits with target date, window and status")
async def get_schedule(request: Request, subject_id: SubjectPath, on: OnDate = None) -> list[schedules.ScheduledVisit]:
    rt = request.app.state.runtime
    return schedules.schedule(await _journey(request, subject_id), rt.protocol, on or today_utc())
