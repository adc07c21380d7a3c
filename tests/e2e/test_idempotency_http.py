"""Idempotency-Key under races, through the running services: one command runs, the others get its
answer or 409 "in progress", never a 5xx; a refused command releases its key and stores nothing."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from support import HEADERS, RunningStack, at, count_events, enrolment

ROUNDS, PARALLEL = 12, 8


def race(stack: RunningStack, path: str, body: dict, key: str) -> list[httpx.Response]:
    url = stack.url("enrollment", path)
    headers = {**HEADERS, "Idempotency-Key": key}
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda _: client.post(url, json=body, headers=headers), range(PARALLEL)))


def test_racing_requests_with_one_key_run_the_command_once(stack: RunningStack):
    before = count_events(stack.database_url, "enrollment")
    for n in range(ROUNDS):
        subject = f"UCT-41-{n:03d}"
        body = {"occurred_at": at(2), "payload": enrolment(2)}
        answers = race(stack, f"/subjects/{subject}/enrolment", body, f"enrol-{subject}-{uuid.uuid4().hex[:6]}")
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {201, 409} and 201 in statuses, statuses
        created = [r.json() for r in answers if r.status_code == 201]
        assert all(c == created[0] for c in created)  # the replays are the first answer
        for busy in (r for r in answers if r.status_code == 409):
            assert busy.headers["content-type"] == "application/problem+json"
            assert "in progress" in busy.json()["detail"] and busy.json()["retryable"] is True
    assert count_events(stack.database_url, "enrollment") == before + ROUNDS


def test_a_refused_command_releases_its_key_under_races(stack: RunningStack):
    subject = "UCT-41-900"
    enrol = {"occurred_at": at(3), "payload": enrolment(3)}
    assert stack.post("enrollment", f"/subjects/{subject}/enrolment", enrol).status_code == 201
    stored = count_events(stack.database_url, "enrollment")
    for n in range(ROUNDS):
        key = f"again-{subject}-{n}"
        answers = race(stack, f"/subjects/{subject}/enrolment", enrol, key)  # the code is used: 409
        assert {r.status_code for r in answers} == {409}, [r.text for r in answers if r.status_code != 409]
        assert count_events(stack.database_url, "enrollment") == stored
        # Released: the same key now serves a corrected request (another subject code).
        corrected = {"occurred_at": at(3), "payload": enrolment(3)}
        other = f"UCT-41-9{n:02d}" if n else "UCT-41-999"
        response = stack.post("enrollment", f"/subjects/{other}/enrolment", corrected, {"Idempotency-Key": key})
        assert response.status_code == 201, response.text
        stored += 1
