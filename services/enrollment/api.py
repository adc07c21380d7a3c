"""Enrollment HTTP API: commands, and the service's own view of a subject."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared import facts
from shared.contract.events import ConsentWithdrawn, Enrolled, ScreenFailed
from shared.errors import SubjectNotFound
from shared.contract.envelope import Envelope
from shared.eventstore import EventMeta
from shared.http.commands import SubjectPath, add_command
from shared.service import Runtime

router = APIRouter(tags=["enrollment"])


async def _enrol(rt: Runtime, meta: EventMeta, payload: Enrolled) -> list[Envelope]:
    return await rt.call(rt.app.enrol, meta, payload)


async def _screen_fail(rt: Runtime, meta: EventMeta, payload: ScreenFailed) -> list[Envelope]:
    return await rt.call(rt.app.screen_fail, meta, payload)


async def _withdraw(rt: Runtime, meta: EventMeta, payload: ConsentWithdrawn) -> list[Envelope]:
    known = await facts.load(rt.pool, rt.schema, meta.subject_id)
    return await rt.call(rt.app.withdraw, meta, payload, known)


add_command(router, "/subjects/{subject_id}/enrolment", Enrolled, _enrol, summary="Enrol a subject")
add_command(router, "/subjects/{subject_id}/screen-failure", ScreenFailed, _screen_fail,
            summary="Record a screening failure")
add_command(router, "/subjects/{subject_id}/consent-withdrawal", ConsentWithdrawn, _withdraw,
            summary="Record withdrawal of consent")


@router.get("/subjects/{subject_id}", summary="The subject as enrollment knows it")
async def get_subject(request: Request, subject_id: SubjectPath) -> dict:
    rt = request.app.state.runtime
    subject = await rt.call(rt.app.find, subject_id)
    if subject is None:
        raise SubjectNotFound(f"No subject {subject_id} in enrollment: check the study code.")
    return {"subject_id": subject.subject_id, "status": subject.status, "site_id": subject.site_id,
            "enrolled_on": subject.enrolled_on, "withdrawn_on": subject.withdrawn_on, "version": subject.version}
