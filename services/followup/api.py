"""Follow-up HTTP API: commands, and the read API over the journey projection."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from services.followup import history
from services.followup.domain import COMMANDS
from services.followup.projections import journey as journeys
from services.followup.projections import reporting, store
from services.followup.projections import schedule as schedules
from services.followup.study import efficacy as efficacy_tables
from services.followup.study import from_journeys as study
from services.followup.study import safety as safety_tables
from shared.access import reads
from shared.contract.envelope import Envelope
from shared.errors import SubjectNotFound
from shared.eventstore import export
from shared.http.commands import SubjectPath, add_commands, learned_site
from shared.http.identity import Permit, Reading, ReadingAuditTrail, ReadingTables
from shared.http.inputs import NeverNull, QueryDate, QueryDatetime
from shared.http.problems import responses
from shared.runtime import Rt, Runtime
from shared.time import now_utc, today_in, today_utc

log = logging.getLogger(__name__)
router = APIRouter(tags=["follow-up"])
read_router = APIRouter(tags=["read"])


add_commands(router, COMMANDS, learned_site)

OnDate = Annotated[
    QueryDate,
    Query(description="Evaluate statuses on this date, YYYY-MM-DD (default: today on each subject's site's calendar)."),
]
# What each kind of read can answer besides 200.
READ = responses(401, 403, 422, 503)
READ_SUBJECT = responses(401, 403, 404, 422, 503)


def site_today(rt: Runtime, site_id: str | None) -> date:
    """Today on the site's calendar: the date a subject's study day and due visits count from."""
    return today_in(rt.protocol.zone(site_id))


async def _journey(rt: Runtime, subject_id: str) -> journeys.Journey:
    found = await store.get(rt.pool, rt.schema, subject_id)
    if found is None:
        raise SubjectNotFound(
            f"No journey for {subject_id} yet: check the code; a subject appears here a moment after its first event."
        )
    return found


@read_router.get("/subjects", summary="Every subject with its status", responses=READ)
async def list_subjects(rt: Rt, allowed: Reading, on: OnDate = None) -> list[dict[str, Any]]:
    return [subject_summary(rt, j, on or site_today(rt, j.site_id)) for j in await visible_journeys(rt, allowed)]


def subject_summary(rt: Runtime, journey: journeys.Journey, today: date) -> dict[str, Any]:
    """A subject as `/subjects` lists it: status and study day on `today`."""
    return {
        "subject_id": journey.subject_id,
        "site_id": journey.site_id,
        "status": journeys.status(journey, today, rt.protocol),
        "study_day": study_day(journey, today),
    }


def study_day(journey: journeys.Journey, on: date) -> int | None:
    """Days from the infusion (day 0) to `on`; None for a subject not infused. (Here, not on `Journey`:
    the journey module's code is its read model's version.)"""
    return (on - journey.infused_on).days if journey.infused_on else None


async def visible_journeys(rt: Runtime, allowed: Permit) -> list[journeys.Journey]:
    """The journeys of the subjects at the sites the caller may see."""
    return [j for j in await store.all_journeys(rt.pool, rt.schema) if allowed.sees(j.site_id)]


AsOf = Annotated[
    QueryDatetime,
    Query(
        description="What the system knew at this moment (system time, ISO 8601 "
        "with a UTC offset, e.g. 2026-03-02T09:30:00+01:00)."
    ),
]
EffectiveOn = Annotated[
    QueryDate,
    Query(
        description="The subject's clinical state on this date, YYYY-MM-DD, as known now (corrections included); "
        "with `on`, the earlier of the two."
    ),
]


async def journey_at(
    rt: Runtime, allowed: Permit, subject_id: str, on: date | None, as_of: datetime | None, effective: date | None
) -> tuple[journeys.Journey, date]:
    """The journey and the date to read it as of: the live journey, or one folded from the events recorded
    by `as_of`. Nothing dated after `effective` shows (the journey keeps each fact's date)."""
    if as_of is None and effective is None:
        journey = await _journey(rt, subject_id)
        allowed.require(subject_id, journey.site_id)
        return journey, on or site_today(rt, journey.site_id)
    events, site = await history_of(rt, allowed, subject_id)
    return known_at(rt, subject_id, events, site, on, as_of, effective)


def known_at(
    rt: Runtime,
    subject_id: str,
    events: list[Envelope],
    site: str | None,
    on: date | None,
    as_of: datetime | None,
    effective: date | None,
) -> tuple[journeys.Journey, date]:
    """The journey folded from the subject's events recorded by `as_of`, and the date (at the site) to
    read it as of."""
    journey = history.fold(subject_id, history.recorded_by(events, as_of))
    zone = rt.protocol.zone(site)
    day = on or effective or (as_of.astimezone(zone).date() if as_of else today_in(zone))
    if effective is not None:
        day = min(day, effective)  # nothing that happened after the effective date shows
    return journey, day


async def history_of(rt: Runtime, allowed: Permit, subject_id: str) -> tuple[list[Envelope], str | None]:
    """Every event of the subject, in recorded order, and the subject's site (a site the caller may not
    see: 404)."""
    async with rt.pool.acquire() as conn:
        events = await history.subject_history(conn, subject_id)
    if not events:
        raise SubjectNotFound(f"No events for {subject_id}: check the study code.")
    site = history.fold(subject_id, events).site_id
    allowed.require(subject_id, site)
    return events, site


@read_router.get(
    "/subjects/{subject_id}/journey", summary="Status, key dates, AEs, queries, responses", responses=READ_SUBJECT
)
async def get_journey(
    rt: Rt,
    allowed: Reading,
    subject_id: SubjectPath,
    on: OnDate = None,
    as_of: AsOf = None,
    effective_on: EffectiveOn = None,
) -> journeys.JourneyView:
    protocol = rt.protocol
    journey, today = await journey_at(rt, allowed, subject_id, on, as_of, effective_on)
    view = journeys.view(journey, today, protocol)
    if (safety := study.safety(journey, protocol, today)) is not None:
        view = view.model_copy(update={"dlt_evaluable": safety.dlt_evaluable, "had_dlt": safety.had_dlt})
    return view


@read_router.get(
    "/subjects/{subject_id}/schedule",
    summary="Planned visits with target date, window and status",
    responses=READ_SUBJECT,
)
async def get_schedule(
    rt: Rt,
    allowed: Reading,
    subject_id: SubjectPath,
    on: OnDate = None,
    as_of: AsOf = None,
    effective_on: EffectiveOn = None,
) -> list[schedules.ScheduledVisit]:
    journey, day = await journey_at(rt, allowed, subject_id, on, as_of, effective_on)
    return schedules.schedule(journey, rt.protocol, day)


HISTORY_FORMATS = {
    "model": list[Envelope],
    "description": "The events in the format asked for: JSON (default), JSON Lines or CSV; or the audit export "
    "(`format=audit`, JSON Lines: a header, then each event with its stored row and chain hash, which "
    "`ucart verify-export` checks against the services' signed checkpoints)",
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}},
}


@read_router.get(
    "/subjects/{subject_id}/history",
    tags=["audit"],
    summary="Every event of the subject from all services: who, when, why (JSON, JSON Lines, CSV, audit export)",
    responses={200: HISTORY_FORMATS, **READ_SUBJECT},
)
async def get_history(
    rt: Rt,
    allowed: ReadingAuditTrail,
    subject_id: SubjectPath,
    format: Literal["json", "jsonl", "csv", "audit"] = "json",
) -> Response:
    events, site = await history_of(rt, allowed, subject_id)
    await reads.log_read(
        rt.pool,
        user_id=allowed.user_id,
        role=allowed.role_at(site),
        service=rt.name,
        what=f"history ({format})",
        subject_id=subject_id,
        site=site,
    )
    if format == "audit":
        async with rt.pool.acquire() as conn:
            audit = await export.export_lines(conn, subject_id, now_utc())
        return Response(
            "".join(line + "\n" for line in audit),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{subject_id}-audit.jsonl"'},
        )
    if format == "jsonl":
        return Response(
            history.as_jsonl(events),
            media_type="application/x-ndjson",
            headers={"Content-Disposition": f'attachment; filename="{subject_id}-history.jsonl"'},
        )
    if format == "csv":
        return Response(
            history.as_csv(events),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{subject_id}-history.csv"'},
        )
    return JSONResponse([e.model_dump(mode="json") for e in events])


class StudyVisit(schedules.ScheduledVisit):
    subject_id: str
    site_id: str | None


@read_router.get("/followups", summary="Planned visits across the study, e.g. ?status=overdue", responses=READ)
async def list_followups(
    rt: Rt,
    allowed: Reading,
    on: OnDate = None,
    status: Annotated[list[schedules.VisitStatus] | None, NeverNull(), Query()] = None,
) -> list[StudyVisit]:
    return [
        StudyVisit(subject_id=j.subject_id, site_id=j.site_id, **visit.model_dump())
        for j in await visible_journeys(rt, allowed)
        for visit in schedules.schedule(j, rt.protocol, on or site_today(rt, j.site_id))
        if not status or visit.status in status
    ]


class StudyQuery(journeys.DataQuery):
    subject_id: str
    site_id: str | None


@read_router.get("/queries", summary="Data queries across the study, e.g. ?status=open", responses=READ)
async def list_queries(
    rt: Rt,
    allowed: Reading,
    status: Annotated[list[Literal["open", "answered", "closed"]] | None, NeverNull(), Query()] = None,
) -> list[StudyQuery]:
    return [
        StudyQuery(subject_id=j.subject_id, site_id=j.site_id, **q.model_dump())
        for j in await visible_journeys(rt, allowed)
        for q in j.queries.values()
        if not status or q.status in status
    ]


@read_router.get(
    "/safety-reports", summary="Expedited reports due, with overdue flags (SAE 24 h, SUSAR 7/15 days)", responses=READ
)
async def list_safety_reports(
    rt: Rt,
    allowed: Reading,
    at: Annotated[
        QueryDatetime, Query(description="Evaluate at this time, ISO 8601 with a UTC offset (default: now).")
    ] = None,
    status: Annotated[list[reporting.ReportStatus] | None, NeverNull(), Query()] = None,
) -> list[reporting.ReportDue]:
    now = at or now_utc()
    return [
        r
        for j in await visible_journeys(rt, allowed)
        for r in reporting.reports_due(j, rt.protocol, now)
        if not status or r.status in status
    ]


@read_router.get(
    "/study/safety",
    summary="Treatment-emergent AEs as of a date: DLT rate, CRS and ICANS by maximum grade, AE incidence, SAEs, SUSARs",
    responses=READ,
)
async def study_safety(rt: Rt, allowed: ReadingTables, on: OnDate = None) -> safety_tables.SafetyTable:
    as_of = on or today_utc()
    summaries = [study.safety(j, rt.protocol, as_of) for j in await visible_journeys(rt, allowed)]
    return safety_tables.safety_table([s for s in summaries if s is not None])


@read_router.get(
    "/study/efficacy",
    summary="ORR at weeks 4, 8, 12; Kaplan-Meier OS, PFS and DOR as of a date (weeks 12 and 24 where estimable)",
    responses=READ,
)
async def study_efficacy(rt: Rt, allowed: ReadingTables, on: OnDate = None) -> efficacy_tables.EfficacyTable:
    as_of = on or today_utc()
    outcomes = [study.outcome(j, as_of) for j in await visible_journeys(rt, allowed)]
    return efficacy_tables.efficacy_table([o for o in outcomes if o is not None], as_of)
