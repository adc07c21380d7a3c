"""Treatment HTTP API: the commands, and the service's own view of a subject."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from services.treatment.domain import COMMANDS, TreatmentSubject
from shared import facts
from shared.errors import SubjectNotFound
from shared.http.commands import SubjectPath, add_commands, learned_site
from shared.http.identity import Reading
from shared.http.problems import responses
from shared.runtime import Rt

router = APIRouter(tags=["treatment"])
add_commands(router, COMMANDS, learned_site)


@router.get(
    "/subjects/{subject_id}", summary="The subject as treatment knows it", responses=responses(401, 403, 404, 422, 503)
)
async def get_subject(rt: Rt, allowed: Reading, subject_id: SubjectPath) -> dict[str, Any]:
    known = await facts.load(rt.pool, rt.schema, subject_id)
    allowed.require(subject_id, known.site_id if known else None)  # what treatment has not learned, it cannot show
    subject: TreatmentSubject | None = await asyncio.to_thread(rt.store.find, subject_id)
    if subject is None and known is None:
        raise SubjectNotFound(f"Treatment knows no subject {subject_id}: check the code, or enrol first.")
    return {
        "subject_id": subject_id,
        "learned": known.model_dump(mode="json") if known else None,
        "lymphodepletion_days": subject.ld_days if subject else [],
        "infused_at": subject.infusions[0] if subject and subject.infusions else None,
        "version": subject.version if subject else 0,
    }
