"""Treatment HTTP API: commands, and the service's own view of a subject."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared import facts
from shared.contract.events import InfusionCorrected, LymphodepletionGiven, UCARTInfused
from shared.errors import SubjectNotFound
from shared.http.commands import SubjectPath, add_command
from shared.http.problems import responses
from shared.service import use_case

from services.treatment.app import TreatmentApplication as App

router = APIRouter(tags=["treatment"])

add_command(router, "/subjects/{subject_id}/lymphodepletion-days", LymphodepletionGiven,
            use_case(App.give_lymphodepletion, facts=True, protocol=True), summary="Record one day of lymphodepletion")
add_command(router, "/subjects/{subject_id}/infusion", UCARTInfused, use_case(App.infuse, facts=True, protocol=True),
            summary="Record the UCAR-T infusion (study day 0)")
add_command(router, "/subjects/{subject_id}/infusion-corrections", InfusionCorrected,
            use_case(App.correct_infusion, facts=True, protocol=True),
            summary="Correct the infusion record (reason required)")


@router.get("/subjects/{subject_id}", summary="The subject as treatment knows it", responses=responses(404, 422, 503))
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
