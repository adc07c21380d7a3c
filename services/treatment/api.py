"""Treatment HTTP API: commands, and the service's own view of a subject."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared import facts
from shared.contract.events import LymphodepletionGiven, UCARTInfused
from shared.errors import SubjectNotFound
from shared.contract.envelope import Envelope
from shared.eventstore import EventMeta
from shared.http.commands import SubjectPath, add_command
from shared.service import Runtime

router = APIRouter(tags=["treatment"])


async def _lymphodepletion(rt: Runtime, meta: EventMeta, payload: LymphodepletionGiven) -> list[Envelope]:
    known = await facts.load(rt.pool, rt.schema, meta.subject_id)
    return await rt.call(rt.app.give_lymphodepletion, meta, payload, known, rt.protocol)


async def _infusion(rt: Runtime, meta: EventMeta, payload: UCARTInfused) -> list[Envelope]:
    known = await facts.load(rt.pool, rt.schema, meta.subject_id)
    return await rt.call(rt.app.infuse, meta, payload, known, rt.protocol)


add_command(router, "/subjects/{subject_id}/lymphodepletion-days", LymphodepletionGiven, _lymphodepletion,
            summary="Record one day of lymphodepletion")
add_command(router, "/subjects/{subject_id}/infusion", UCARTInfused, _infusion,
            summary="Record the UCAR-T infusion (study day 0)")


@router.get("/subjects/{subject_id}", summary="The subject as treatment knows it")
async def get_subject(request: Request, subject_id: SubjectPath) -> dict:
    rt = request.app.state.runtime
    subject = await rt.call(rt.app.find, subject_id)
    known = await facts.load(rt.pool, rt.schema, subject_id)
    if subject is None and known is None:
        raise SubjectNotFound(f"Treatment knows no subject {subject_id}: check the code, or enrol first.")
    return {
        "subject_id": subject_id,
        "learned": known.model_dump(mode="json") if known else None,
        "lymphodepletion_days": subject.ld_days if subject else [],
        "infused_at": subject.infusions[0] if subject and subject.infusions else None,
        "version": subject.version if subject else 0,
    }
