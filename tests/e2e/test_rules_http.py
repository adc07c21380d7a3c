"""Every rule refused over HTTP with problem+json, a message a coordinator can act on, and nothing stored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from support import (
    FLU_CY,
    INFUSION,
    RunningStack,
    at,
    count_events,
    enrolment,
    eventually,
    treat,
)


def refused(
    stack: RunningStack, service: str, path: str, body: dict, status: int, words: str, headers: dict | None = None
) -> dict:
    before = count_events(stack.database_url, service)
    response = stack.post(service, path, body, headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    assert words.lower() in problem["detail"].lower(), problem["detail"]
    assert count_events(stack.database_url, service) == before, "a refused command stored an event"
    return problem


def cmd(occurred_at: str, payload: dict) -> dict:
    return {"occurred_at": occurred_at, "payload": payload}


def test_enrollment_rules(stack: RunningStack):
    s = "UCT-03-201"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(3), enrolment(3)).status_code == 201
    refused(stack, "enrollment", f"/subjects/{s}/enrolment", cmd(at(2), enrolment(2)), 409, "already used")
    refused(
        stack,
        "enrollment",
        f"/subjects/{s}/screen-failure",
        cmd(at(2), {"site_id": "03", "failure_reason": "CD19 negative"}),
        409,
        "already used",
    )
    late_consent = {**enrolment(3), "consent_signed_on": at(0)[:10]}
    refused(
        stack,
        "enrollment",
        "/subjects/UCT-03-202/enrolment",
        cmd(at(3), late_consent),
        422,
        "consent must be signed on or before enrolment",
    )
    refused(
        stack,
        "enrollment",
        "/subjects/UCT-03-203/enrolment",
        cmd(at(3), {**enrolment(3), "cd19_positive": False}),
        409,
        "not eligible",
    )
    refused(
        stack,
        "enrollment",
        "/subjects/UCT-03-204/consent-withdrawal",
        cmd(at(1), {"withdrawal_reason": "moved away"}),
        404,
        "no subject",
    )


def test_invalid_input_is_422_and_names_the_field(stack: RunningStack):
    path = "/subjects/UCT-03-211/enrolment"
    problem = refused(stack, "enrollment", path, cmd(at(1), {**enrolment(1), "sex": "X"}), 422, "payload.sex")
    assert any(e["field"] == "payload.sex" for e in problem["errors"])
    refused(stack, "enrollment", path, cmd(at(1), {**enrolment(1), "nickname": "Jo"}), 422, "payload.nickname")
    refused(stack, "enrollment", path, cmd("2026-01-01T09:00:00", enrolment(1)), 422, "occurred_at")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    refused(stack, "enrollment", path, cmd(tomorrow, enrolment(1)), 422, "in the future")
    refused(stack, "enrollment", "/subjects/John%20Smith/enrolment", cmd(at(1), enrolment(1)), 422, "subject_id")
    refused(stack, "enrollment", path, cmd(at(1), enrolment(1)), 401, "access token", headers={"Authorization": ""})


def test_treatment_rules(stack: RunningStack):
    refused(stack, "treatment", "/subjects/UCT-03-221/lymphodepletion-days", cmd(at(1), FLU_CY), 404, "no enrolment")
    s = "UCT-03-222"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(12), enrolment(12)).status_code == 201
    assert (
        stack.command_when_known("treatment", f"/subjects/{s}/lymphodepletion-days", at(10), FLU_CY).status_code == 201
    )
    refused(stack, "treatment", f"/subjects/{s}/lymphodepletion-days", cmd(at(10), FLU_CY), 409, "already recorded")
    refused(stack, "treatment", f"/subjects/{s}/lymphodepletion-days", cmd(at(11), FLU_CY), 409, "in order")
    refused(stack, "treatment", f"/subjects/{s}/infusion", cmd(at(7), INFUSION), 409, "at least 3")
    for days_ago in (9, 8, 7, 6):
        assert (
            stack.command("treatment", f"/subjects/{s}/lymphodepletion-days", at(days_ago), FLU_CY).status_code == 201
        )
    refused(stack, "treatment", f"/subjects/{s}/lymphodepletion-days", cmd(at(5), FLU_CY), 409, "at most 5")
    refused(stack, "treatment", f"/subjects/{s}/infusion", cmd(at(6), INFUSION), 409, "0 day(s) after")
    assert stack.command("treatment", f"/subjects/{s}/infusion", at(3), INFUSION).status_code == 201
    refused(stack, "treatment", f"/subjects/{s}/infusion", cmd(at(2), INFUSION), 409, "already infused")
    bad_agents = {"agents": [{"agent": "aspirin", "dose": 1, "unit": "mg"}]}
    refused(stack, "treatment", f"/subjects/{s}/lymphodepletion-days", cmd(at(1), bad_agents), 422, "agent")


def test_no_treatment_after_withdrawal(stack: RunningStack):
    s = "UCT-03-231"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(6), enrolment(6)).status_code == 201
    assert (
        stack.command(
            "enrollment", f"/subjects/{s}/consent-withdrawal", at(5), {"withdrawal_reason": "Subject request"}
        ).status_code
        == 201
    )

    def learned_withdrawal():
        response = stack.post("treatment", f"/subjects/{s}/lymphodepletion-days", cmd(at(4), FLU_CY))
        return response.status_code == 409 and response

    eventually(learned_withdrawal)
    refused(stack, "treatment", f"/subjects/{s}/lymphodepletion-days", cmd(at(4), FLU_CY), 409, "withdrew consent")


def test_followup_rules(stack: RunningStack):
    ae = {
        "term": "Cytokine release syndrome",
        "category": "CRS",
        "grade": 2,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(1),
    }
    s = "UCT-03-241"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(3), enrolment(3)).status_code == 201
    # Once follow-up has learned of the enrolment (404 until then), it refuses AEs before infusion.
    eventually(lambda: stack.post("followup", f"/subjects/{s}/adverse-events", cmd(at(1), ae)).status_code == 409)
    problem = refused(stack, "followup", f"/subjects/{s}/adverse-events", cmd(at(1), ae), 409, "no infusion")
    assert problem["retryable"] is True  # the infusion may still be on its way from treatment

    t = "UCT-03-242"
    treat(stack, t, infusion_days_ago=5)
    assert stack.command_when_known("followup", f"/subjects/{t}/adverse-events", at(4), ae).status_code == 201
    path = f"/subjects/{t}/adverse-events"
    refused(stack, "followup", path, cmd(at(4), {**ae, "grade": 6}), 422, "payload.grade")
    refused(stack, "followup", path, cmd(at(4), {**ae, "grade": 0}), 422, "payload.grade")
    refused(stack, "followup", path, cmd(at(7), ae), 409, "before the infusion")
    responses = f"/subjects/{t}/response-assessments"
    refused(
        stack,
        "followup",
        responses,
        cmd(at(1), {"timepoint": "W4", "response": "PR", "marrow_blasts_pct": 2}),
        422,
        "payload.response",
    )
    refused(
        stack,
        "followup",
        responses,
        cmd(at(1), {"timepoint": "W4", "response": "CR", "marrow_blasts_pct": 12}),
        422,
        "marrow blasts must be < 5.0%",
    )
    refused(stack, "followup", f"/subjects/{t}/visits", cmd(at(1), {"visit_code": "D99"}), 422, "not in protocol")


@pytest.mark.parametrize("service", ["enrollment"])
def test_idempotency_key_replays_the_first_answer(stack: RunningStack, service: str):
    path = "/subjects/UCT-03-251/enrolment"
    body = cmd(at(2), enrolment(2))
    key = {"Idempotency-Key": "enrol-UCT-03-251-attempt"}
    first = stack.post(service, path, body, key)
    assert first.status_code == 201
    stored = count_events(stack.database_url, service)
    again = stack.post(service, path, body, key)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers.get("idempotent-replayed") == "true"
    assert count_events(stack.database_url, service) == stored
    refused(stack, service, path, cmd(at(1), enrolment(1)), 422, "already used for a different request", headers=key)


def test_a_loss_to_follow_up_cannot_come_before_what_the_site_recorded(stack: RunningStack):
    s = "UCT-03-441"
    treat(stack, s, infusion_days_ago=30)
    assert (
        stack.command_when_known("followup", f"/subjects/{s}/visits", at(2), {"visit_code": "D28"}).status_code == 201
    )
    path = f"/subjects/{s}/lost-to-follow-up"
    refused(stack, "followup", path, cmd(at(1), {"last_contact_on": at(5)[:10]}), 422, "last_contact_on")
    refused(
        stack, "followup", path, cmd("2000-01-01T09:00:00+00:00", {"last_contact_on": "2000-01-01"}), 422, "before data"
    )
    accepted = stack.post("followup", path, cmd(at(1), {"last_contact_on": at(2)[:10]}))
    assert accepted.status_code == 201, accepted.text


def test_main_follow_up_completion_needs_the_week_12_assessment_or_a_reason(stack: RunningStack):
    s = "UCT-03-442"
    treat(stack, s, infusion_days_ago=95)
    path, done = f"/subjects/{s}/study-completion", {"completed": "main_follow_up"}

    def known() -> bool:  # once follow-up has learned the infusion, the refusal is no longer retryable
        answer = stack.post("followup", path, cmd(at(2), done))
        return answer.status_code == 409 and not answer.json().get("retryable")

    eventually(known)
    refused(stack, "followup", path, cmd(at(2), done), 409, "no week-12 response assessment")
    with_reason = {**cmd(at(2), done), "reason": "The subject declined the week-12 marrow aspirate"}
    accepted = stack.post("followup", path, with_reason)
    assert accepted.status_code == 201, accepted.text
