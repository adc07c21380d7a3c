"""RFC 9457 problem+json for every error, with a message a study coordinator can act on."""

from __future__ import annotations

import logging
import traceback
from http import HTTPStatus
from typing import Any

import asyncpg
from eventsourcing.persistence import InterfaceError as ESInterfaceError
from eventsourcing.persistence import OperationalError as ESOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from shared.errors import DependencyUnavailable, DomainError
from shared.http.routes import every_route

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"

# The body of every error answer, as documented in OpenAPI (components/schemas/Problem).
PROBLEM_SCHEMA = {
    "title": "Problem",
    "description": "RFC 9457 problem details; `detail` says what is wrong and what to do.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string", "description": "The path asked for."},
        "errors": {
            "type": "array",
            "description": "Invalid input: each field (body, path, query or header) and what is wrong with it.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "retryable": {
            "type": "boolean",
            "description": "True when the refusal may clear by itself: retry after a moment.",
        },
    },
}

_MEANING = {
    400: "The body is not JSON in UTF-8 (nothing stored)",
    404: "Unknown subject (or an AE or data query not recorded for it)",
    409: "Not allowed by the protocol, or changed concurrently",
    422: "Invalid input, each wrong field named (nothing stored)",
    503: "A dependency is down (nothing stored); retry later",
    401: "No bearer token, or one that cannot be trusted (expired, wrong issuer or audience, bad signature)",
    403: "Your grants do not allow this action",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` of a route for the error statuses it can answer."""
    schema = {"$ref": "#/components/schemas/Problem"}
    return {status: {"description": _MEANING[status], "content": {PROBLEM: {"schema": schema}}} for status in statuses}


# Documented on every command in OpenAPI.
PROBLEM_RESPONSES = responses(400, 401, 403, 404, 409, 422, 503)


def problem(
    status: int, title: str, detail: str, request: Request, headers: dict[str, str] | None = None, **extra: object
) -> JSONResponse:
    body = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def _http_detail(request: Request, exc: HTTPException) -> str:
    """What to do about an error raised by the framework rather than by our code."""
    if exc.status_code == 404:
        return f"There is nothing at {request.url.path}: check the path against the OpenAPI document (/docs)."
    if exc.status_code == 405:
        return f"{request.method} is not answered here; use {(exc.headers or {}).get('Allow', 'another method')}."
    if exc.status_code == 400:
        return "The body could not be read: send JSON encoded in UTF-8. Nothing was stored."
    return str(exc.detail)


def _document_problems(app: FastAPI) -> None:
    """Put the Problem schema, which `responses` refers to, into the app's OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        document = app.openapi_schema or generate()  # generated once, then kept by FastAPI
        document.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        return document

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the document


def _methods_at(app: FastAPI, request: Request) -> set[str]:
    """Every method some route answers at the request's path."""
    methods: set[str] = set()
    for route in every_route(app):
        if isinstance(route, Route) and route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return methods


def _where(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    if parts and parts[0] == "header":
        return f"header {parts[1]}" if len(parts) > 1 else "headers"
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    _document_problems(app)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _where(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        stored = "Nothing was stored. " if request.method == "POST" else ""
        return problem(422, "Invalid input", f"{stored}Fix and resend: {detail}", request, errors=errors)

    @app.exception_handler(DomainError)
    async def refused(request: Request, exc: DomainError) -> JSONResponse:
        headers = getattr(exc, "headers", None)  # e.g. WWW-Authenticate on a 401
        if exc.retryable:
            return problem(exc.status, exc.title, exc.detail, request, headers, retryable=True)
        return problem(exc.status, exc.title, exc.detail, request, headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # exc.headers carries what the answer needs, e.g. Allow on a 405.
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route of the path
            headers["Allow"] = ", ".join(sorted(_methods_at(app, request))) or headers.get("Allow", "")
            exc = HTTPException(405, exc.detail, headers)
        return problem(
            exc.status_code, HTTPStatus(exc.status_code).phrase, _http_detail(request, exc), request, headers
        )

    for error in (*CONNECTION_LOST, OSError, TimeoutError):
        app.add_exception_handler(error, _unavailable_or_a_bug)


# A dependency that cannot be reached: the connection errors of the database clients, and an OSError
# or a TimeoutError raised inside one of them. Our own code raising those is a bug (500): an outage
# and a bug never look alike.
CONNECTION_LOST: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError,  # refused, lost, does not exist
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    ESOperationalError,  # the event store's psycopg, wrapped
    ESInterfaceError,
)
CLIENTS = frozenset({"asyncpg", "psycopg", "psycopg_pool", "eventsourcing", "aiokafka"})


def raised_by_a_client(exc: BaseException) -> bool:
    return any(
        str(frame.f_globals.get("__name__", "")).partition(".")[0] in CLIENTS
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


async def _unavailable_or_a_bug(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, CONNECTION_LOST) or raised_by_a_client(exc):
        log.warning("dependency unavailable: %r", exc)
        return problem(
            503,
            DependencyUnavailable.title,
            "The database or another dependency is unreachable; nothing was stored. Retry in a moment.",
            request,
            retryable=True,
        )
    log.error("unexpected %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
    return problem(
        500,
        "Internal Server Error",
        "Something went wrong on our side; it is logged. Retry later, or report it if it keeps happening.",
        request,
    )
