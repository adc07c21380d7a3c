"""Every read model of the product, from each service's consumers: what the operator commands and the
tests rebuild, compare and check."""

from __future__ import annotations

from services.enrollment.consumers import READ_MODELS as ENROLLMENT
from services.followup.consumers import READ_MODELS as FOLLOWUP
from services.treatment.consumers import READ_MODELS as TREATMENT
from shared.readmodel import ReadModel

READ_MODELS: tuple[ReadModel, ...] = (*ENROLLMENT, *TREATMENT, *FOLLOWUP)


def named(alias: str) -> ReadModel:
    """The read model operators call `alias` (e.g. journey, treatment-facts)."""
    return next(m for m in READ_MODELS if m.alias == alias)
