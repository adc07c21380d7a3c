"""Auditors: a subject's full history and its exports, and as-of / effective-on queries."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from support import TEST_USER, RunningStack, at, bearer, eventually, treat

AUDITOR = bearer("auditor-1")


def history(stack: RunningStack, subject: str, fmt: str = "json"):
    return stack.client.get(
        stack.url("followup", f"/subjects/{subject}/history"), params={"format": fmt}, headers=AUDITOR
    )


def test_history_lists_every_event_of_every_service_in_recorded_order(stack: RunningStack):
    s = "UCT-08-501"
    treat(stack, s, infusion_days_ago=4)
    ae = {
        "term": "Fever",
        "category": "OTHER",
        "grade": 2,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(3),
    }
    ae_id = stack.command_when_known("followup", f"/subjects/{s}/adverse-events", at(3), ae).json()["events"][0][
        "payload"
    ]["ae_id"]
    correction = stack.post(
        "followup",
        f"/subjects/{s}/adverse-event-corrections",
        {"occurred_at": at(3), "reason": "Grade entered wrongly", "payload": {**ae, "grade": 1, "ae_id": ae_id}},
    )
    assert correction.status_code == 201, correction.text

    events = history(stack, s).json()
    assert [(e["source"], e["event_type"]) for e in events] == [
        ("enrollment", "Enrolled"),
        *[("treatment", "LymphodepletionGiven")] * 3,
        ("treatment", "UCARTInfused"),
        ("followup", "AEReported"),
        ("followup", "AECorrected"),
    ]
    assert [e["recorded_at"] for e in events] == sorted(e["recorded_at"] for e in events)
    assert events[-1]["reason"] == "Grade entered wrongly"
    assert events[-1]["recorded_by"] == {"user_id": TEST_USER, "role": "investigator", "site_id": "01"}
    assert events[0]["recorded_by"]["site_id"] == "01"
    assert all(e["schema_version"] >= 1 and e["correlation_id"] for e in events)

    lines = history(stack, s, "jsonl")
    assert lines.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in lines.text.splitlines()] == events
    table = list(csv.DictReader(io.StringIO(history(stack, s, "csv").text)))
    assert [row["event_id"] for row in table] == [e["event_id"] for e in events]
    assert table[-1]["reason"] == "Grade entered wrongly" and json.loads(table[-1]["payload"])["grade"] == 1

    # The journey shows the corrected value and what it replaced.
    eventually(
        lambda: (
            [a["corrections"] for a in stack.get("followup", f"/subjects/{s}/journey").json().get("adverse_events", [])]
            == [1]
        )
    )
    (ae_view,) = stack.get("followup", f"/subjects/{s}/journey").json()["adverse_events"]
    assert ae_view["report"]["grade"] == 1 and [r["grade"] for r in ae_view["previous_reports"]] == [2]


def test_history_needs_a_token_and_every_read_of_it_is_logged_for_auditors(stack: RunningStack):
    s = "UCT-08-503"
    treat(stack, s, infusion_days_ago=2)
    anonymous = stack.client.get(stack.url("followup", f"/subjects/{s}/history"))
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Bearer")
    assert stack.client.get(stack.url("followup", "/subjects/UCT-08-599/history"), headers=AUDITOR).status_code == 404
    # Another site's coordinator: the subject does not exist for them; their own site's may read it.
    other_site = stack.client.get(stack.url("followup", f"/subjects/{s}/history"), headers=bearer("coordinator-02"))
    assert other_site.status_code == 404
    assert history(stack, s, "csv").status_code == 200
    assert (
        stack.client.get(stack.url("followup", f"/subjects/{s}/history"), headers=bearer("coordinator-01")).status_code
        == 200
    )

    log = stack.client.get(stack.url("followup", "/access/audit-reads"), headers=AUDITOR).json()
    mine = [(r["user_id"], r["role"], r["what"]) for r in log if r["subject_id"] == s]
    assert mine[:2] == [("coordinator-01", "coordinator", "history (json)"), ("auditor-1", "auditor", "history (csv)")]
    assert len(mine) == 2  # refused reads read nothing
    # The site-02 coordinator sees only the reads of site-02 subjects; the sponsor may not read the log.
    theirs = stack.client.get(stack.url("followup", "/access/audit-reads"), headers=bearer("coordinator-02")).json()
    assert all(r["site_id"] == "02" for r in theirs)
    assert (
        stack.client.get(stack.url("followup", "/access/audit-reads"), headers=bearer("sponsor-1")).status_code == 403
    )


def test_as_of_answers_what_the_system_knew_and_effective_on_what_was_true(stack: RunningStack):
    s = "UCT-08-502"
    treat(stack, s, infusion_days_ago=6)
    before_ae = datetime.now(UTC)
    ae = {
        "term": "Cytokine release syndrome",
        "category": "CRS",
        "grade": 2,
        "serious": False,
        "relatedness": "probable",
        "aware_at": at(5),
    }
    assert stack.command_when_known("followup", f"/subjects/{s}/adverse-events", at(5), ae).status_code == 201

    def journey(**params) -> dict:
        return stack.get("followup", f"/subjects/{s}/journey", **params).json()

    assert journey(as_of=before_ae.isoformat())["ae_count"] == 0  # entered after that moment
    assert journey(as_of=datetime.now(UTC).isoformat())["ae_count"] == 1
    infused_on = datetime.fromisoformat(at(6)).date()
    on_day_0 = journey(effective_on=infused_on.isoformat())
    assert (on_day_0["status"], on_day_0["ae_count"], on_day_0["study_day"]) == ("infused", 0, 0)
    day_before = journey(effective_on=(infused_on - timedelta(days=1)).isoformat())
    assert day_before["status"] == "lymphodepleting" and day_before["infused_on"] is None
    schedule = stack.get("followup", f"/subjects/{s}/schedule", effective_on=infused_on.isoformat()).json()
    assert {v["status"] for v in schedule} == {"upcoming"}  # on day 0 every visit is still ahead
