"""RFC 9457 problem+json for every error, with a message a study coordinator can act on."""

from __future__ import annotations

import logging

import asyncpg
from eventsourcing.persistence import InterfaceError as ESInterfaceError
from eventsourcing.persistence import OperationalError as ESOperationalError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from shared.errors import DependencyUnavailable, DomainError

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"

# Documented on every command in OpenAPI.
PROBLEM_RESPONSES = {
    status: {"description": text, "content": {PROBLEM: {}}}
    for status, text in {
        404: "Unknown subject",
        409: "Not allowed by the protocol, or changed concurrently",
        422: "Invalid input (nothing stored)",
        503: "A dependency is down (nothing stored); retry later",
    }.items()
}


def problem(status: int, title: str, detail: str, request: Request, **extra: object) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail,
            "instance": request.url.path, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM)


def _where(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    if parts and parts[0] == "header":
        return f"header {parts[1]}" if len(parts) > 1 else "headers"
    return ".".join(parts) or "request"


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"field": _where(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return problem(422, "Invalid input", f"Nothing was stored. Fix and resend: {detail}", request,
                       errors=errors)

    @app.exception_handler(DomainError)
    async def refused(request: Request, exc: DomainError) -> JSONResponse:
        extra = {"retryable": True} if exc.retryable else {}
        return problem(exc.status, exc.title, exc.detail, request, **extra)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, "Request failed", str(exc.detail), request)

    for error in (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, ConnectionError, OSError,
                  ESOperationalError, ESInterfaceError, TimeoutError):

        @app.exception_handler(error)
        async def unavailable(request: Request, exc: Exception) -> JSONResponse:
            log.warning("dependency unavailable: %r", exc)
            return problem(503, DependencyUnavailable.title,
                           "The database or another dependency is unreachable; nothing was stored. "
                           "Retry in a moment.", request, retryable=True)
