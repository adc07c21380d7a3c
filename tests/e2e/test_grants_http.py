"""Grants through the admin API: only the study admin grants and revokes; each change is an event
with who and why, listed for auditors; a revoked grant stops working at once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from support import TEST_ADMIN, RunningStack, at, bearer, enrolment

ADMIN = bearer(TEST_ADMIN)  # a study admin by configuration (UCART_STUDY_ADMINS)


def test_a_grant_works_at_once_and_a_revocation_stops_it_at_once(stack: RunningStack):
    person, subject = "coordinator-07", "UCT-07-001"
    enrol = {"occurred_at": at(1), "payload": {**enrolment(1), "site_id": "07"}}
    assert stack.post("enrollment", f"/subjects/{subject}/enrolment", enrol, bearer(person)).status_code == 403

    grant = {"user_id": person, "role": "coordinator", "sites": ["07"], "reason": "Site 07 activated"}
    granted = stack.post("enrollment", "/access/grants", grant, ADMIN)
    assert granted.status_code == 201, granted.text
    assert granted.json()["by"] == TEST_ADMIN
    assert stack.post("treatment", "/access/grants", grant, ADMIN).status_code == 409  # already held: one store
    created = stack.post("enrollment", f"/subjects/{subject}/enrolment", enrol, bearer(person))
    assert created.status_code == 201, created.text
    assert created.json()["events"][0]["event_type"] == "Enrolled"

    revoke = {"user_id": person, "role": "coordinator", "reason": "Left the site"}
    assert stack.post("followup", "/access/revocations", revoke, ADMIN).status_code == 201
    assert stack.get("enrollment", f"/subjects/{subject}", headers=bearer(person)).status_code == 403

    history = stack.get("enrollment", f"/access/grants/{person}/history", headers=bearer("auditor-1")).json()
    assert [(h["event"], h["role"], h["reason"], h["by"]) for h in history] == [
        ("RoleGranted", "coordinator", "Site 07 activated", TEST_ADMIN),
        ("RoleRevoked", "coordinator", "Left the site", TEST_ADMIN),
    ]
    in_force = stack.get("enrollment", "/access/grants", headers=ADMIN).json()
    assert not any(g["user_id"] == person for g in in_force)
    assert any(g["user_id"] == "coordinator-01" and g["sites"] == ["01"] for g in in_force)


def test_only_the_study_admin_grants_and_no_one_can_be_granted_the_rules_identity(stack: RunningStack):
    grant = {"user_id": "intruder", "role": "data_manager", "sites": ["*"], "reason": "Let me in"}
    for someone in ("test-user", "auditor-1", "coordinator-01", "intruder"):
        assert stack.post("enrollment", "/access/grants", grant, bearer(someone)).status_code == 403, someone
    system = {"user_id": "intruder", "role": "system", "sites": ["*"], "reason": "Act as the rules"}
    refused = stack.post("enrollment", "/access/grants", system, ADMIN)
    assert refused.status_code == 422 and "role" in refused.json()["detail"]
    assert stack.get("enrollment", "/access/grants", headers=bearer("coordinator-01")).status_code == 403


def test_grants_refuse_bad_bodies_and_racing_changes_answer_409_never_5xx(stack: RunningStack):
    for body, field in (
        ({"user_id": "x y", "role": "monitor", "sites": ["01"], "reason": "r"}, "user_id"),
        ({"user_id": "m-1", "role": "monitor", "sites": [], "reason": "r"}, "sites"),
        ({"user_id": "m-1", "role": "monitor", "sites": ["site 1"], "reason": "r"}, "sites"),
        ({"user_id": "m-1", "role": "monitor", "sites": ["01"], "reason": ""}, "reason"),
        ({"user_id": "m-1", "role": "monitor", "sites": ["01"]}, "reason"),
    ):
        refused = stack.post("enrollment", "/access/grants", body, ADMIN)
        assert refused.status_code == 422 and field in refused.json()["detail"], (body, refused.text)
    person = "raced-person"
    bodies = [
        {"user_id": person, "role": role, "sites": ["01"], "reason": "race"}
        for role in ("coordinator", "investigator", "monitor", "auditor")
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda n: stack.post(
                    ("enrollment", "treatment", "followup")[n % 3], "/access/grants", bodies[n % 4], ADMIN
                ),
                range(8),
            )
        )
    assert {a.status_code for a in answers} <= {201, 409}, [a.text for a in answers]
    held = {
        g["role"] for g in stack.get("enrollment", "/access/grants", headers=ADMIN).json() if g["user_id"] == person
    }
    created = {bodies[n % 4]["role"] for n, a in enumerate(answers) if a.status_code == 201}
    assert created <= held
