"""Treatment service: `python -m services.treatment.main` (port 8002 by default)."""

from __future__ import annotations

from shared.service import ServiceSpec, build_app, serve

from services.treatment.api import router
from services.treatment.app import TreatmentApplication
from services.treatment.consumers import READ_MODELS

SPEC = ServiceSpec(
    name="treatment",
    title="Treatment",
    description="Lymphodepletion and UCAR-T infusion of enrolled subjects.",
    application=TreatmentApplication,
    routers=(router,),
    read_models=READ_MODELS,
)


def create_app():
    return build_app(SPEC)


if __name__ == "__main__":
    serve(SPEC)
