"""The Worklists page: what is due or overdue across the subjects a person may see (visits, survival
contacts, safety-report clocks) and the data queries still to be answered or closed, which the page
answers and closes, as the person's role allows, through the same command rules as the API.

The forms are protected against cross-site requests twice: the session cookie is SameSite=Lax (another
site's form posts without it), and each form carries a token derived from the session (`csrf_token`),
which a POST must send back."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import TypeAdapter, ValidationError

from services.followup.api import site_today, study_day, visible_journeys
from services.followup.dashboard.pages import _page
from services.followup.dashboard.render import message, templates
from services.followup.dashboard.session import SESSION_COOKIE
from services.followup.domain import COMMANDS
from services.followup.projections import reporting
from services.followup.projections import schedule as schedules
from shared.access.policy import Action
from shared.commands import Command
from shared.contract.envelope import SubjectId
from shared.errors import ConcurrentChange, DomainError, Forbidden, Unauthenticated
from shared.http.commands import CommandRequest, Retry, learned_site, record_command
from shared.http.identity import Permit, permit_for
from shared.runtime import Rt, Runtime
from shared.time import now_utc

router = APIRouter(include_in_schema=False)

CSRF_FIELD = "csrf"
KEY_FIELD = "once"  # a one-time key per form shown: a second click is a retry (Idempotency-Key)
ONE_TIME_KEY = re.compile(r"[0-9a-f]{32}")
# What the page can do to a query: the command (the API's own row), the form field that holds the text.
ACTIONS: dict[str, tuple[Command, str]] = {
    "answer": (next(c for c in COMMANDS if c.route == "query-answers"), "answer"),
    "close": (next(c for c in COMMANDS if c.route == "query-closures"), "resolution"),
}
DONE = {"answer": "Your answer to the data query on {} is recorded.", "close": "The data query on {} is closed."}
UNRESOLVED = ("open", "answered")  # queries still waiting for someone: an answer, then a closure
PENDING_VISITS = ("overdue", "due")
PENDING_REPORTS = ("overdue", "due")
SUBJECT_ID: TypeAdapter[str] = TypeAdapter(SubjectId)


def csrf_token(session: str) -> str:
    """The token a form of this session must send back: an HMAC keyed with the session's own secret (the
    HttpOnly cookie, which another site can neither read nor send with a cross-site POST)."""
    return hmac.new(session.encode(), b"ucart-dashboard-form", hashlib.sha256).hexdigest()


async def _may(rt: Runtime, session: str | None, action: Action) -> Permit | None:
    """The person's permit for `action`, or None where no grant of theirs allows it anywhere."""
    try:
        return await permit_for(rt, session, action)
    except Forbidden:
        return None


def _form(status: str, site: str | None, answering: Permit | None, closing: Permit | None) -> dict[str, str] | None:
    """The form the person gets for a query: answering an open one, closing an answered one, as their
    role allows at its site; None for neither."""
    if status == "open" and answering is not None and answering.sees(site):
        return {"what": "answer", "field": ACTIONS["answer"][1], "label": "Answer", "button": "Send answer"}
    if status == "answered" and closing is not None and closing.sees(site):
        return {"what": "close", "field": ACTIONS["close"][1], "label": "Resolution", "button": "Close query"}
    return None


@router.get("/dashboard/worklists")
async def worklists_page(request: Request, rt: Rt, site: str | None = None, done: str | None = None) -> Response:
    session = request.cookies.get(SESSION_COOKIE)

    async def render(allowed: Permit) -> Response:
        now = now_utc()
        visible = await visible_journeys(rt, allowed)
        chosen = [j for j in sorted(visible, key=lambda j: j.subject_id) if not site or j.site_id == site]
        # Where the person may answer or close: asked only when some query waits for either.
        waiting = {q.status for j in chosen for q in j.queries.values()}
        answering = await _may(rt, session, Action.ANSWER_QUERY) if "open" in waiting else None
        closing = await _may(rt, session, Action.CLOSE_QUERY) if "answered" in waiting else None
        visits: list[dict[str, Any]] = []
        queries: list[dict[str, Any]] = []
        reports: list[dict[str, Any]] = []
        for j in chosen:
            zone = rt.protocol.zone(j.site_id)  # each row in its site's time zone, on its site's calendar
            today = site_today(rt, j.site_id)
            for v in schedules.schedule(j, rt.protocol, today):
                if v.status in PENDING_VISITS:
                    missed = schedules.missed(j, v, today)
                    row = {"subject_id": j.subject_id, "site_id": j.site_id, "v": v, "day0": j.infused_on}
                    visits.append(row | {"missed": missed})
            for q in j.queries.values():
                if q.status in UNRESOLVED:
                    queries.append(
                        {
                            "subject_id": j.subject_id,
                            "site_id": j.site_id,
                            "q": q,
                            "zone": zone,
                            "once": uuid.uuid4().hex,  # this form's one-time key
                            "form": _form(q.status, j.site_id, answering, closing),
                        }
                    )
            for r in reporting.reports_due(j, rt.protocol, now):
                if r.status in PENDING_REPORTS:
                    due_day = study_day(j, r.due_at.astimezone(zone).date()) if r.due_at else None
                    reports.append({"r": r, "study_day": due_day, "zone": zone})
        # Overdue first, then the most pressing.
        visits.sort(key=lambda x: (PENDING_VISITS.index(x["v"].status), x["v"].window_end, x["subject_id"]))
        queries.sort(key=lambda x: (UNRESOLVED.index(x["q"].status), x["q"].opened_at))
        reports.sort(key=lambda x: (PENDING_REPORTS.index(x["r"].status), x["r"].due_at, x["r"].subject_id))
        subject, _, what = (done or "").partition(":")
        context = {
            "user": allowed.user_id,
            "visits": [x for x in visits if x["v"].kind != "survival" and not x["missed"]],
            "contacts": [x for x in visits if x["v"].kind == "survival"],
            "missed": [x for x in visits if x["missed"]],
            "queries": queries,
            "reports": reports,
            "sites": sorted({j.site_id for j in visible if j.site_id}),
            "chosen": {"site": site or ""},
            "done": DONE[what].format(subject) if what in DONE and _valid_subject(subject) else None,
            "csrf": csrf_token(session or ""),
            "now": now,
            "utc": UTC,
        }
        return templates.TemplateResponse(request, "worklists.html", context)

    return await _page(request, rt, Action.READ, render)


def _valid_subject(subject_id: str) -> bool:
    try:
        SUBJECT_ID.validate_python(subject_id)
    except ValidationError:
        return False
    return True


def _what_to_fix(exc: ValidationError, field: str) -> str:
    """A validation error said for a person filling in the form."""
    said = []
    for error in exc.errors():
        where = error["loc"][-1] if error["loc"] else field
        name = "The text" if where in ("answer", "resolution") else f"The {where}"
        said.append(f"{name}: {error['msg']}.")
    return " ".join(said) + " Go back, correct it and send it again."


@router.post("/dashboard/subjects/{subject_id}/queries/{query_id}/{what}")
async def act_on_query(request: Request, rt: Rt, subject_id: str, query_id: str, what: str) -> Response:
    """Answer or close a data query from the page: the API's command, recorded for the session's person."""
    if what not in ACTIONS:
        return message(request, 404, "Not found", "There is no such page.")
    command, field = ACTIONS[what]
    session = request.cookies.get(SESSION_COOKIE)
    try:
        allowed = await permit_for(rt, session, command.action)
    except Unauthenticated:
        return RedirectResponse("/login?next=/dashboard/worklists", status_code=303)
    except DomainError as exc:
        return message(request, exc.status, exc.title, exc.detail)
    form = await request.form()
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not session or not hmac.compare_digest(sent, csrf_token(session)):
        return message(
            request,
            403,
            "Form refused",
            "This form did not come from your dashboard session (or the session changed since the page was "
            "shown). Reload the worklist and send it again.",
            allowed.user_id,
        )
    try:
        subject_id = SUBJECT_ID.validate_python(subject_id.upper())
        UUID(query_id)
    except (ValidationError, ValueError):
        return message(request, 404, "Not found", "No such data query: check the link.", allowed.user_id)
    text, key = form.get(field), form.get(KEY_FIELD)
    answered_at = datetime.now(rt.protocol.zone(await learned_site(rt, subject_id)))  # the site's clock
    try:
        body = CommandRequest[command.payload].model_validate(  # type: ignore[name-defined]  # made at run time
            {
                "occurred_at": answered_at,
                "payload": {"query_id": query_id, field: text if isinstance(text, str) else ""},
            }
        )
    except ValidationError as exc:
        return message(request, 422, "Check the form", _what_to_fix(exc, field), allowed.user_id)
    if not isinstance(key, str) or not ONE_TIME_KEY.fullmatch(key):
        return message(
            request, 422, "Check the form", "The form lacks its one-time key: reload the worklist.", allowed.user_id
        )
    retry = Retry(key, f"{request.url.path} {allowed.user_id}", str(text).encode())
    try:
        await _record_once(rt, command, allowed, subject_id, body, retry)
    except DomainError as exc:
        return message(request, exc.status, exc.title, exc.detail, allowed.user_id)
    return RedirectResponse(f"/dashboard/worklists?{urlencode({'done': f'{subject_id}:{what}'})}", status_code=303)


async def _record_once(
    rt: Runtime, command: Command, allowed: Permit, subject_id: str, body: Any, retry: Retry
) -> None:
    """The API's command (`record_command`) for the form, once per form shown: a second click sends the
    same one-time key, waits while the first is being recorded, and is answered as it was."""
    for _ in range(40):
        try:
            await record_command(rt, command, allowed, subject_id, body, learned_site, retry)
            return
        except ConcurrentChange as exc:
            if not exc.retryable:
                raise
            await asyncio.sleep(0.25)
    raise ConcurrentChange("Your form is still being recorded; look at the worklist again in a moment.")
