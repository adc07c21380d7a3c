"""Enrollment HTTP API: the commands, and the service's own view of a subject."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from services.enrollment.domain import COMMANDS, EnrollmentSubject
from shared.errors import SubjectNotFound
from shared.http.commands import SubjectPath, add_commands
from shared.http.identity import Reading
from shared.http.problems import responses
from shared.runtime import Rt, Runtime


async def site_of(rt: Runtime, subject_id: str) -> str | None:
    subject: EnrollmentSubject | None = await asyncio.to_thread(rt.store.find, subject_id)
    return subject.site_id if subject else None


router = APIRouter(tags=["enrollment"])
add_commands(router, COMMANDS, site_of)


@router.get(
    "/subjects/{subject_id}", summary="The subject as enrollment knows it", responses=responses(401, 403, 404, 422, 503)
)
async def get_subject(rt: Rt, allowed: Reading, subject_id: SubjectPath) -> dict[str, Any]:
    subject: EnrollmentSubject | None = await asyncio.to_thread(rt.store.find, subject_id)
    if subject is None:
        raise SubjectNotFound(f"No subject {subject_id} in enrollment: check the study code.")
    allowed.require(subject_id, subject.site_id)
    return {
        "subject_id": subject.subject_id,
        "status": subject.status,
        "site_id": subject.site_id,
        "enrolled_on": subject.enrolled_on,
        "withdrawn_on": subject.withdrawn_on,
        "version": subject.version,
    }
