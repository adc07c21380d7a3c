"""Treatment service: `python -m services.treatment.main` (port 8002 by default)."""

from __future__ import annotations

from fastapi import FastAPI

from services.treatment.api import router
from services.treatment.consumers import READ_MODELS
from services.treatment.domain import TreatmentSubject
from shared.service import ServiceSpec, build_app, serve

SPEC = ServiceSpec(
    name="treatment",
    title="Treatment",
    description="Lymphodepletion and UCAR-T infusion of enrolled subjects.",
    aggregate=TreatmentSubject,
    routers=(router,),
    read_models=READ_MODELS,
)


def create_app() -> FastAPI:
    return build_app(SPEC)


if __name__ == "__main__":
    serve(SPEC)
