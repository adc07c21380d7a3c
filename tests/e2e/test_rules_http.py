"""Every rule refused over HTTP with problem+json, a message a coordinator can act on, and nothing stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
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


AE = {
    "term": "Cytokine release syndrome",
    "category": "CRS",
    "grade": 2,
    "serious": False,
    "relatedness": "possible",
}


def adverse_event(aware_days_ago: float, **changes) -> dict:
    return {**AE, "aware_at": at(aware_days_ago), **changes}


def known_then_refused(stack: RunningStack, service: str, path: str, body: dict, status: int, words: str) -> dict:
    """`refused`, once the service has learned what it needs from the others (a retryable refusal until then).
    Only for refusals: an answer before that would be recorded."""

    def learned() -> bool:
        answer = stack.post(service, path, body)
        if answer.status_code == 201:
            pytest.fail(f"recorded instead of refused: {answer.text}")
        return answer.status_code == status and not answer.json().get("retryable")

    eventually(learned)
    return refused(stack, service, path, body, status, words)


def last_record_known(stack: RunningStack, service: str, subject_id: str, on: str) -> bool:
    """True once `service` has learned a clinical record of the subject dated `on` (or later)."""

    async def read() -> bool:
        conn = await asyncpg.connect(stack.database_url)
        try:
            latest = await conn.fetchval(
                f"SELECT last_record_on FROM {service}.subject_facts WHERE subject_id = $1", subject_id
            )
            return latest is not None and latest >= date.fromisoformat(on)
        finally:
            await conn.close()

    return asyncio.run(read())


def test_followup_rules(stack: RunningStack):
    s = "UCT-03-241"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(3), enrolment(3)).status_code == 201
    # AEs are recorded from enrolment on, with no infusion: once follow-up has learned of the enrolment (a
    # retryable 404 until then), one dated before it is refused, naming both dates.
    path = f"/subjects/{s}/adverse-events"
    enrolled_on = at(3)[:10]
    problem = known_then_refused(
        stack, "followup", path, cmd(at(4), adverse_event(4)), 422, f"before {s} was enrolled ({enrolled_on})"
    )
    assert at(4)[:10] in problem["detail"] and not problem.get("retryable")
    accepted = stack.post("followup", path, cmd(at(1), adverse_event(1)))  # before any treatment
    assert accepted.status_code == 201, accepted.text

    t = "UCT-03-242"
    treat(stack, t, infusion_days_ago=5)
    path = f"/subjects/{t}/adverse-events"
    assert stack.command_when_known("followup", path, at(4), adverse_event(1)).status_code == 201
    refused(stack, "followup", path, cmd(at(4), {**adverse_event(1), "grade": 6}), 422, "payload.grade")
    refused(stack, "followup", path, cmd(at(4), {**adverse_event(1), "grade": 0}), 422, "payload.grade")
    before_the_infusion = stack.post("followup", path, cmd(at(7), adverse_event(7)))  # study day -2
    assert before_the_infusion.status_code == 201, before_the_infusion.text
    visit = cmd(at(7), {"visit_code": "D1"})
    known_then_refused(stack, "followup", f"/subjects/{t}/visits", visit, 409, "before the infusion")
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


def test_nothing_clinical_after_a_death_but_its_consequences(stack: RunningStack):
    s = "UCT-03-501"
    treat(stack, s, infusion_days_ago=30)
    reported = stack.command_when_known("followup", f"/subjects/{s}/adverse-events", at(25), adverse_event(25))
    assert reported.status_code == 201, reported.text
    ae_id = reported.json()["events"][0]["payload"]["ae_id"]
    assert (
        stack.command("followup", f"/subjects/{s}/death", at(10), {"primary_cause": "adverse_event"}).status_code == 201
    )
    updates = f"/subjects/{s}/adverse-event-updates"
    refused(
        stack, "followup", updates, cmd(at(5), {"ae_id": ae_id, "grade": 4}), 409, f"after {s} died ({at(10)[:10]})"
    )
    visit = cmd(at(5), {"visit_code": "D28"})
    known_then_refused(stack, "followup", f"/subjects/{s}/visits", visit, 409, f"after {s} died")
    alive = {"status": "alive", "method": "phone"}
    refused(stack, "followup", f"/subjects/{s}/survival-status", cmd(at(5), alive), 409, f"after {s} died")
    outcome = stack.post("followup", updates, cmd(at(5), {"ae_id": ae_id, "outcome": "fatal"}))  # a consequence
    assert outcome.status_code == 201, outcome.text


def test_the_news_of_a_death_records_the_death(stack: RunningStack):
    s = "UCT-03-502"
    treat(stack, s, infusion_days_ago=40)
    path = f"/subjects/{s}/survival-status"
    news = {"status": "dead", "method": "phone", "died_on": at(3)[:10], "primary_cause": "disease_progression"}
    answer = stack.command_when_known("followup", path, at(1), news)
    assert answer.status_code == 201, answer.text
    contact, death = answer.json()["events"]
    assert (contact["event_type"], death["event_type"]) == ("SurvivalStatusRecorded", "SubjectDied")
    assert death["payload"]["primary_cause"] == "disease_progression"
    other_date = {**news, "died_on": at(4)[:10]}
    refused(stack, "followup", path, cmd(at(1), other_date), 409, f"recorded on {at(3)[:10]}")
    refused(stack, "followup", path, cmd(at(1), {"status": "alive", "method": "phone"}), 409, f"after {s} died")
    again = stack.post("followup", path, cmd(at(1), news))  # the same news again: only the contact
    assert [e["event_type"] for e in again.json()["events"]] == ["SurvivalStatusRecorded"], again.text

    late = "UCT-03-503"
    treat(stack, late, infusion_days_ago=170)
    path = f"/subjects/{late}/survival-status"
    known_then_refused(
        stack, "followup", path, cmd(at(1), {"status": "alive", "method": "phone"}), 409, "this contact is on day 169"
    )


def test_responses_after_week_12_and_progressive_disease(stack: RunningStack):
    s = "UCT-03-504"
    treat(stack, s, infusion_days_ago=60)
    path = f"/subjects/{s}/response-assessments"
    nr = {"timepoint": "W4", "response": "NR", "marrow_blasts_pct": 40.0, "mrd_pct": 30.0, "mrd_assay": "flow"}
    week4 = stack.command_when_known("followup", path, at(32), nr)
    assert week4.status_code == 201, week4.text
    assert week4.json()["events"][0]["payload"]["mrd_negative"] is False  # derived from mrd_pct
    refused(stack, "followup", path, cmd(at(20), {**nr, "timepoint": "M6"}), 409, "record it as UNSCHEDULED")
    pd = {"timepoint": "UNSCHEDULED", "response": "PD", "marrow_blasts_pct": 45.0}
    refused(stack, "followup", path, cmd(at(20), pd), 409, "record NR if the disease has not progressed")
    refused(stack, "followup", path, cmd(at(20), {**pd, "response": "RELAPSE"}), 409, "never been in remission")
    contradiction = {**nr, "timepoint": "W8", "mrd_pct": 0.5, "mrd_negative": True}
    refused(stack, "followup", path, cmd(at(4), contradiction), 422, "mrd_negative is true but mrd_pct 0.5%")
    progressed = stack.post("followup", path, cmd(at(20), {**pd, "marrow_blasts_pct": 50.0}))
    assert progressed.status_code == 201, progressed.text


def test_a_withdrawal_is_not_dated_before_a_treatment(stack: RunningStack):
    s = "UCT-03-505"
    treat(stack, s, infusion_days_ago=5)
    path, withdrawal = f"/subjects/{s}/consent-withdrawal", {"withdrawal_reason": "Subject request"}
    eventually(lambda: last_record_known(stack, "enrollment", s, at(5)[:10]))  # enrollment learned the infusion
    refused(
        stack,
        "enrollment",
        path,
        cmd(at(7), withdrawal),
        422,
        f"before data already recorded for {s} (on {at(5)[:10]})",
    )
    accepted = stack.post("enrollment", path, cmd(at(5), withdrawal))
    assert accepted.status_code == 201, accepted.text


def test_a_child_s_icans_and_one_query_per_ae(stack: RunningStack):
    s = "UCT-03-506"
    child = {**enrolment(10), "year_of_birth": datetime.now(UTC).year - 8}
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(10), child).status_code == 201
    path = f"/subjects/{s}/adverse-events"
    icans = {**adverse_event(2), "category": "ICANS", "term": "ICANS", "grade": 3}
    with_ice = {**icans, "icans": {"ice_score": 8}}
    known_then_refused(stack, "followup", path, cmd(at(2), with_ice), 422, "use capd_score for children under 12")
    reported = stack.post("followup", path, cmd(at(2), {**icans, "icans": {"capd_score": 5}}))
    assert reported.status_code == 201, reported.text
    ae, opened = reported.json()["events"]
    assert (opened["event_type"], opened["payload"]["expected_value"]) == ("DataQueryOpened", "1-2")
    correction = {**icans, "grade": 4, "icans": {"capd_score": 6}, "ae_id": ae["payload"]["ae_id"]}
    corrected = stack.post(
        "followup",
        f"/subjects/{s}/adverse-event-corrections",
        {**cmd(at(2), correction), "reason": "Grade re-assessed"},
    )
    assert corrected.status_code == 201, corrected.text
    _, restated = corrected.json()["events"]
    assert restated["event_type"] == "DataQueryUpdated"
    assert (restated["payload"]["query_id"], restated["payload"]["recorded_value"]) == (
        opened["payload"]["query_id"],
        "4",
    )


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
