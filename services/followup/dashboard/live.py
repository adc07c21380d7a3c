"""Live pages: a page open in a browser learns within a second that what it shows has changed.

Server-sent events (`GET /dashboard/live`): the stream checks, twice a second, a fingerprint of what
the page shows (one subject's journey, or the journey consumer's progress for the lists) and sends
`changed` when it moves; the page's script (static/live.js) then fetches the page again and swaps its
live region in place. Checking beats LISTEN/NOTIFY here: it needs nothing from the projections and
costs one small read per open page and half-second. A stream ends after a few minutes and the browser
reconnects (EventSource does), so no stream outlives a session for long.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from services.followup.dashboard.session import SESSION_COOKIE
from services.followup.projections import store
from shared.access.policy import Action
from shared.errors import DomainError
from shared.http.identity import permit_for
from shared.runtime import Rt, Runtime

CHECK_SECONDS = 0.5
STREAM_SECONDS = 300.0
HEARTBEAT_SECONDS = 15.0

router = APIRouter(include_in_schema=False)


async def fingerprint(rt: Runtime, subject_id: str | None) -> str:
    if subject_id is not None:
        found = await rt.pool.fetchval(
            f"SELECT md5(journey::text) FROM {rt.schema}.journeys WHERE subject_id = $1", subject_id
        )
        return str(found)
    row = await rt.pool.fetchrow(
        f"SELECT count(*) AS n, max(updated_at) AS at FROM {rt.schema}.consumer_applied WHERE consumer = $1",
        "followup-journey",
    )
    return f"{row['n']}:{row['at']}" if row else ""


@router.get("/dashboard/live")
async def live(request: Request, rt: Rt, subject: str | None = None) -> Response:
    try:
        allowed = await permit_for(rt, request.cookies.get(SESSION_COOKIE), Action.READ)
        if subject is not None:
            journey = await store.get(rt.pool, rt.schema, subject)
            allowed.require(subject, journey.site_id if journey else None)
    except DomainError as exc:
        return Response(exc.detail, status_code=exc.status, media_type="text/plain")

    async def changes() -> AsyncIterator[str]:
        last, ends, quiet_since = await fingerprint(rt, subject), time.monotonic() + STREAM_SECONDS, time.monotonic()
        yield "retry: 1000\n\n"
        while time.monotonic() < ends and not await request.is_disconnected():
            await asyncio.sleep(CHECK_SECONDS)
            now = await fingerprint(rt, subject)
            if now != last:
                last, quiet_since = now, time.monotonic()
                yield "event: changed\ndata: {}\n\n"
            elif time.monotonic() - quiet_since > HEARTBEAT_SECONDS:
                quiet_since = time.monotonic()
                yield ": still here\n\n"

    return StreamingResponse(changes(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
