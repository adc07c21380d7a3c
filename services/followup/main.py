"""Follow-up service: `python -m services.followup.main` (port 8003 by default); also the read API."""

from __future__ import annotations

from fastapi import FastAPI

from services.followup import dashboard
from services.followup.api import read_router, router
from services.followup.consumers import READ_MODELS
from services.followup.domain import FollowupSubject
from shared.service import ServiceSpec, build_app, serve

SPEC = ServiceSpec(
    name="followup",
    title="Follow-up",
    description="Adverse events, response assessments, visits and deaths after UCAR-T infusion; "
    "read API over each subject's journey and follow-up schedule; the ops dashboard at /.",
    aggregate=FollowupSubject,
    routers=(router, read_router, dashboard.router),
    read_models=READ_MODELS,
)


def create_app() -> FastAPI:
    return build_app(SPEC)


if __name__ == "__main__":
    serve(SPEC)
