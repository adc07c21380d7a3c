"""Enrollment service: `python -m services.enrollment.main` (port 8001 by default)."""

from __future__ import annotations

from fastapi import FastAPI

from services.enrollment.api import router
from services.enrollment.consumers import READ_MODELS
from services.enrollment.domain import EnrollmentSubject
from shared.service import ServiceSpec, build_app, serve

SPEC = ServiceSpec(
    name="enrollment",
    title="Enrollment",
    description="Screening, consent, enrolment and withdrawal of UCAR-T study subjects.",
    aggregate=EnrollmentSubject,
    routers=(router,),
    read_models=READ_MODELS,
)


def create_app() -> FastAPI:
    return build_app(SPEC)


if __name__ == "__main__":
    serve(SPEC)
