"""Enrollment HTTP API: commands, and the service's own view of a subject."""

from __future__ import annotations

from fastapi import APIRouter, Request

from shared.contract.events import ConsentWithdrawn, Enrolled, ScreenFailed
from shared.errors import SubjectNotFound
from shared.http.commands import SubjectPath, add_command
from shared.http.problems import responses
from shared.service import use_case

from services.enrollment.app import EnrollmentApplication as App

router = APIRouter(tags=["enrollment"])


add_command(router, "/subjects/{subject_id}/enrolment", Enrolled, use_case(App.enrol, protocol=True),
            summary="Enrol a subject")
add_command(router, "/subjects/{subject_id}/screen-failure", ScreenFailed, use_case(App.screen_fail),
            summary="Record a screening failure")
add_command(router, "/subjects/{subject_id}/consent-withdrawal", ConsentWithdrawn,
            use_case(App.withdraw, facts=True), summary="Record withdrawal of consent")


@router.get("/subjects/{subject_id}", summary="The subject as enrollment knows it", responses=responses(404, 422, 503))
async def get_subject(request: Request, subject_id: SubjectPath) -> dict:
    rt = request.app.state.runtime
    subject = await rt.call(rt.app.find, subject_id)
    if subject is None:
        raise SubjectNotFound(f"No subject {subject_id} in enrollment: check the study code.")
    return {"subject_id": subject.subject_id, "status": subject.status, "site_id": subject.site_id,
            "enrolled_on": subject.enrolled_on, "withdrawn_on": subject.withdrawn_on, "version": subject.version}
