"""The dashboard's pages, server-rendered with Jinja2: readable without JavaScript, every asset served
from here. Each page asks the same policy as the API (`permit_for`), with the session's token: a
site's staff see their sites' subjects only, and a subject of another site does not exist for them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response

from services.followup.api import journey_at, site_today, subject_summary, visible_journeys
from services.followup.dashboard import persistence
from services.followup.dashboard.render import HERE, message, templates
from services.followup.dashboard.session import SESSION_COOKIE
from services.followup.dashboard.swimmer import lane
from services.followup.projections import journey as journeys
from services.followup.projections import reporting
from services.followup.projections import schedule as schedules
from services.followup.study import from_journeys as study
from shared.access.policy import Action
from shared.errors import DomainError, Unauthenticated
from shared.http.identity import Permit, permit_for
from shared.runtime import Rt, Runtime
from shared.time import now_utc

STATIC = {p.name: p for p in (HERE / "static").iterdir() if p.is_file()}
STATUSES: tuple[str, ...] = get_args(journeys.Status)

router = APIRouter(include_in_schema=False)


def login_url(request: Request) -> str:
    """The login, returning afterwards to this very page, its query included (e.g. the study's `on`)."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"/login?{urlencode({'next': here})}"


async def _page(
    request: Request, rt: Runtime, action: Action, render: Callable[[Permit], Awaitable[Response]]
) -> Response:
    """Render a page for the session's person, or send them to log in, or say why not (as HTML)."""
    try:
        allowed = await permit_for(rt, request.cookies.get(SESSION_COOKIE), action)
    except Unauthenticated:
        return RedirectResponse(login_url(request), status_code=303)
    except DomainError as exc:
        return message(request, exc.status, exc.title, exc.detail)
    try:
        return await render(allowed)
    except DomainError as exc:
        return message(request, exc.status, exc.title, exc.detail, allowed.user_id)


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/dashboard/subjects", status_code=303)


@router.get("/logged-out")
async def logged_out(request: Request) -> Response:
    return message(request, 200, "Logged out", "You are logged out.")


@router.get("/dashboard/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        return Response("Not found", status_code=404, media_type="text/plain")
    return FileResponse(STATIC[name])


def flags(journey: journeys.Journey, rt: Runtime, today: date) -> list[str]:
    """What needs someone's attention for one subject (`today` on the subject's site's calendar)."""
    found = []
    overdue = [v for v in schedules.schedule(journey, rt.protocol, today) if v.status == "overdue"]
    if any(not schedules.missed(journey, v, today) for v in overdue):
        found.append("overdue visit")
    if any(schedules.missed(journey, v, today) for v in overdue):
        found.append("missed visit")
    if any(q.status == "open" for q in journey.queries.values()):
        found.append("open query")
    if any(r.status in ("due", "overdue") for r in reporting.reports_due(journey, rt.protocol, now_utc())):
        found.append("report due")
    return found


@router.get("/dashboard/subjects")
async def subjects_page(
    request: Request, rt: Rt, site: str | None = None, status: str | None = None, q: str | None = None
) -> Response:
    async def render(allowed: Permit) -> Response:
        visible = await visible_journeys(rt, allowed)
        rows: list[dict[str, Any]] = []
        for j in sorted(visible, key=lambda j: j.subject_id):
            today = site_today(rt, j.site_id)
            row = subject_summary(rt, j, today)
            if (site and j.site_id != site) or (status and row["status"] != status):
                continue
            if q and q.strip().upper() not in j.subject_id:
                continue
            rows.append(row | {"flags": flags(j, rt, today)})
        context = {
            "user": allowed.user_id,
            "rows": rows,
            "sites": sorted({j.site_id for j in visible if j.site_id}),
            "statuses": STATUSES,
            "chosen": {"site": site or "", "status": status or "", "q": q or ""},
        }
        return templates.TemplateResponse(request, "subjects.html", context)

    return await _page(request, rt, Action.READ, render)


@router.get("/dashboard/subjects/{subject_id}")
async def subject_page(request: Request, rt: Rt, subject_id: str) -> Response:
    async def render(allowed: Permit) -> Response:
        journey, today = await journey_at(rt, allowed, subject_id.upper(), None, None, None)
        view = journeys.view(journey, today, rt.protocol)
        if (safety := study.safety(journey, rt.protocol, today)) is not None:
            view = view.model_copy(update={"dlt_evaluable": safety.dlt_evaluable, "had_dlt": safety.had_dlt})
        visits = schedules.schedule(journey, rt.protocol, today)
        context = {
            "user": allowed.user_id,
            "j": view,
            "visits": visits,
            "reports": reporting.reports_due(journey, rt.protocol, now_utc()),
            "lane": lane(view, visits, today, rt.protocol.dlt.window_days),
            "persistence": persistence.chart(view.persistence, view.infused_on),
            "today": today,
            "zone": rt.protocol.zone(view.site_id),
        }
        return templates.TemplateResponse(request, "subject.html", context)

    return await _page(request, rt, Action.READ, render)
