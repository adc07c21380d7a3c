"""Enrollment service: `python -m services.enrollment.main` (port 8001 by default)."""

from __future__ import annotations

from shared.service import ServiceSpec, build_app, serve

from services.enrollment.api import router
from services.enrollment.app import EnrollmentApplication
from services.enrollment.consumers import READ_MODELS

SPEC = ServiceSpec(
    name="enrollment",
    title="Enrollment",
    description="Screening, consent, enrolment and withdrawal of UCAR-T study subjects.",
    application=EnrollmentApplication,
    routers=(router,),
    read_models=READ_MODELS,
)


def create_app():
    return build_app(SPEC)


if __name__ == "__main__":
    serve(SPEC)
