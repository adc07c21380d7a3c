"""The Audit page of a subject: every event of all services in the order it was recorded, with who, when
and why, and an as-of control that shows what the system knew at a moment (the journey folded from the
events recorded by then, as `GET /subjects/{id}/journey?as_of=` answers). Each read is logged, like a
read of the API's history."""

from __future__ import annotations

import json
from datetime import datetime, tzinfo
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import TypeAdapter, ValidationError

from services.followup import history
from services.followup.api import history_of, journey_at, known_at
from services.followup.dashboard.pages import _page
from services.followup.dashboard.render import message, templates
from services.followup.projections import journey as journeys
from shared.access import reads
from shared.access.policy import Action
from shared.contract.envelope import Envelope, SubjectId
from shared.http.identity import Permit
from shared.runtime import Rt

router = APIRouter(include_in_schema=False)

SUBJECT_ID: TypeAdapter[str] = TypeAdapter(SubjectId)
AS_OF_HELP = (
    "Give the moment as a date and time, e.g. 2026-03-02T09:30 (read in the site's time zone) or with its offset, "
    "e.g. 2026-03-02T09:30:00+01:00."
)


def parse_as_of(text: str | None, zone: tzinfo) -> datetime | None:
    """The as-of moment of the form: a datetime-local value (no offset: read in `zone`, the site's) or
    ISO 8601 with an offset. ValueError when it is neither."""
    if text is None or not text.strip():
        return None
    moment = datetime.fromisoformat(text.strip())
    if not 1900 <= moment.year <= 2100:
        raise ValueError("out of range")
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


def readable(payload: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A payload as (field, value) lines: nested fields dotted, lists of plain values joined."""
    lines: list[tuple[str, str]] = []
    if isinstance(payload, dict):
        for key, value in payload.items():
            lines.extend(readable(value, f"{prefix}{key}."))
        return lines
    name = prefix.rstrip(".")
    if isinstance(payload, list) and all(isinstance(v, dict) for v in payload) and payload:
        for i, value in enumerate(payload, 1):
            lines.extend(readable(value, f"{name}[{i}]."))
        return lines
    if payload is None:
        text = "—"
    elif isinstance(payload, str):
        text = payload
    else:
        text = json.dumps(payload, ensure_ascii=False)
    return [(name, text)]


def row(e: Envelope) -> dict[str, Any]:
    return {
        "recorded_at": e.recorded_at,
        "occurred_at": e.occurred_at,
        "event_type": e.event_type,
        "source": e.source,
        "stream_version": e.stream_version,
        "user_id": e.recorded_by.user_id,
        "role": e.recorded_by.role,
        "site_id": e.recorded_by.site_id,
        "reason": e.reason,
        "payload": readable(e.payload),
    }


@router.get("/dashboard/subjects/{subject_id}/audit")
async def audit_page(request: Request, rt: Rt, subject_id: str, as_of: str | None = None) -> Response:
    async def render(allowed: Permit) -> Response:
        try:
            sid = SUBJECT_ID.validate_python(subject_id.upper())
        except ValidationError:
            return message(request, 404, "Unknown subject", f"No subject {subject_id}: check the study code.")
        events, site = await history_of(rt, allowed, sid)  # a subject of another site: 404
        zone = rt.protocol.zone(site)
        try:
            moment = parse_as_of(as_of, zone)
        except ValueError:
            return message(request, 422, "Check the date", f"“{as_of}” is not a moment. {AS_OF_HELP}", allowed.user_id)
        await reads.log_read(
            rt.pool,
            user_id=allowed.user_id,
            role=allowed.role_at(site),
            service=rt.name,
            what="history (dashboard)" + (f" as of {moment.isoformat()}" if moment else ""),
            subject_id=sid,
            site=site,
        )
        shown = history.recorded_by(events, moment)
        # As of a moment: the events read above, folded (not read again); now: the projection.
        if moment:
            journey, day = known_at(rt, sid, events, site, None, moment, None)
        else:
            journey, day = await journey_at(rt, allowed, sid, None, None, None)
        context = {
            "user": allowed.user_id,
            "subject_id": sid,
            "j": journeys.view(journey, day, rt.protocol) if shown else None,
            "day": day,
            "events": [row(e) for e in shown],
            "total": len(events),
            "as_of": moment,
            "as_of_value": moment.astimezone(zone).strftime("%Y-%m-%dT%H:%M:%S") if moment else "",
            "zone": zone,
        }
        return templates.TemplateResponse(request, "audit.html", context)

    return await _page(request, rt, Action.AUDIT_TRAIL, render)
