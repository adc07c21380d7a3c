"""The whole journey through the three services' HTTP APIs, on real PostgreSQL and a real broker."""

from __future__ import annotations

import asyncio
from datetime import date, timedelta

from infra import seed
from shared.contract.topics import topic_for
from shared.protocol import load_protocol
from support import (
    FLU_CY,
    INFUSION,
    ISSUER,
    TEST_USER,
    RunningStack,
    at,
    count_events,
    enrolment,
    eventually,
    produce_signed,
    read_topic,
    treat,
)


def test_subject_journey_end_to_end(stack: RunningStack):
    s = "UCT-01-101"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(20), enrolment(20)).status_code == 201
    for days_ago in (17, 16, 15):
        response = stack.command_when_known("treatment", f"/subjects/{s}/lymphodepletion-days", at(days_ago), FLU_CY)
        assert response.status_code == 201, response.text
    infusion = stack.command("treatment", f"/subjects/{s}/infusion", at(12), INFUSION)
    assert infusion.status_code == 201, infusion.text
    ae = stack.command_when_known(
        "followup",
        f"/subjects/{s}/adverse-events",
        at(10),
        {
            "term": "Cytokine release syndrome",
            "category": "CRS",
            "grade": 2,
            "serious": False,
            "relatedness": "probable",
            "aware_at": at(10),
        },
    )
    assert ae.status_code == 201, ae.text
    response = stack.command_when_known(  # AEs need only the enrolment; a response needs the infusion
        "followup",
        f"/subjects/{s}/response-assessments",
        at(1),
        {"timepoint": "UNSCHEDULED", "response": "CR", "marrow_blasts_pct": 1.0, "mrd_negative": True},
    )
    assert response.status_code == 201, response.text

    def journey_complete():
        r = stack.get("followup", f"/subjects/{s}/journey")
        return r.status_code == 200 and r.json()["ae_count"] == 1 and r.json()["latest_response"] and r.json()

    journey = eventually(journey_complete)
    infused_on = date.fromisoformat(at(12)[:10])
    assert journey["status"] == "infused"
    assert journey["infused_on"] == infused_on.isoformat()
    assert journey["study_day"] == (date.fromisoformat(journey["as_of"]) - infused_on).days
    assert len(journey["lymphodepletion_days"]) == 3
    assert journey["worst_crs_grade"] == 2 and journey["worst_icans_grade"] is None
    assert journey["best_response"]["response"] == "CR"

    schedule = stack.get("followup", f"/subjects/{s}/schedule").json()
    protocol = load_protocol()
    planned = sorted((p for p in protocol.followup.visits if p.kind != "ltfu"), key=lambda p: (p.target_day, p.code))
    assert [v["code"] for v in schedule] == [p.code for p in planned]
    d7 = next(v for v in schedule if v["code"] == "D7")
    assert d7["target_date"] == (infused_on + timedelta(days=7)).isoformat()
    assert d7["status"] == "overdue"  # day 7 +1 passed, never completed
    assert next(v for v in schedule if v["code"] == "D14")["status"] == "due"  # day 12, window 12-16

    listed = {row["subject_id"]: row["status"] for row in stack.get("followup", "/subjects").json()}
    assert listed[s] == "infused"


def test_every_stored_event_is_published_once_keyed_by_subject(stack: RunningStack):
    s = "UCT-02-102"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(5), enrolment(5)).status_code == 201
    assert (
        stack.command_when_known("treatment", f"/subjects/{s}/lymphodepletion-days", at(1), FLU_CY).status_code == 201
    )

    def published(service: str):
        stored = count_events(stack.database_url, service)
        messages = asyncio.run(read_topic(stack.bootstrap, topic_for(service, stack.prefix), stored))
        return len(messages) >= stored and (stored, messages)

    for service in ("enrollment", "treatment"):
        stored, messages = eventually(lambda service=service: published(service))
        ids = [m.event_id for m in messages]
        assert len(ids) == len(set(ids)) == stored
        assert all(m.source == service for m in messages)
    mine = [
        m
        for m in asyncio.run(read_topic(stack.bootstrap, topic_for("treatment", stack.prefix), 99, 3))
        if m.subject_id == s
    ]
    assert [m.event_type for m in mine] == ["LymphodepletionGiven"]
    # Who: the token's subject; the role and site: the grant that allowed it there.
    assert mine[0].recorded_by.model_dump() == {"user_id": TEST_USER, "role": "investigator", "site_id": "01"}
    assert mine[0].protocol_version == load_protocol().version


def test_demo_cohort_reaches_every_stage(stack: RunningStack):
    seeded, skipped = seed.seed(stack.settings, ISSUER.token(TEST_USER))
    assert (seeded, skipped) == (len(seed.cohort()), 0)
    expected = {subject.subject_id: subject.expected_status for subject in seed.cohort()}

    def statuses():
        rows = {r["subject_id"]: r["status"] for r in stack.get("followup", "/subjects").json()}
        wrong = {k: (rows.get(k), v) for k, v in expected.items() if rows.get(k) != v}
        assert not wrong, f"(actual, expected) status: {wrong}"
        return True

    assert eventually(statuses) is True
    assert set(expected.values()) >= {
        "screen_failed",
        "enrolled",
        "lymphodepleting",
        "infused",
        "follow_up",
        "long_term_follow_up",
        "completed",
        "withdrawn",
        "lost_to_follow_up",
        "died",
    }
    assert_the_new_states_show(stack)
    # Seeding again adds nothing.
    before = count_events(stack.database_url, "followup")
    assert seed.seed(stack.settings, ISSUER.token(TEST_USER)) == (0, len(expected))
    assert count_events(stack.database_url, "followup") == before


def assert_the_new_states_show(stack: RunningStack) -> None:
    """The cohort shows what months 6-12 brought: an M6 assessment, progressive disease, survival contacts
    after completion, an AE during lymphodepletion, a grade that worsened after the DLT window."""

    def journey(subject: str) -> dict:
        return stack.get("followup", f"/subjects/{subject}/journey").json()

    assert [r["timepoint"] for r in journey("UCT-01-001")["responses"]][-1] == "M6"
    assert [r["response"] for r in journey("UCT-02-013")["responses"]] == ["NR", "PD", "PD"]
    completed = journey("UCT-01-012")
    contacts = completed["survival_contacts"]
    assert [c["visit_code"] for c in contacts] == ["SURV_W16", "SURV_W20"]
    assert all(c["contacted_on"] > completed["completed_on"] for c in contacts)
    assert completed["last_known_alive"] == contacts[-1]["contacted_on"]
    during_ld = journey("UCT-02-004")
    before_day_0 = [ae for ae in during_ld["adverse_events"] if ae["onset_on"] < during_ld["infused_on"]]
    assert [ae["treatment_emergent"] for ae in before_day_0] == [True]  # on a lymphodepletion day
    before_ld = journey("UCT-01-003")
    first = min(before_ld["adverse_events"], key=lambda ae: ae["onset_on"])
    assert first["onset_on"] < before_ld["lymphodepletion_days"][0] and first["treatment_emergent"] is False
    late = next(ae for ae in journey("UCT-01-002")["adverse_events"] if ae["report"]["term"] == "Delayed neurotoxicity")
    assert [g["grade"] for g in late["grade_history"]] == [1, 3]
    assert journey("UCT-01-002")["had_dlt"] is False  # grade 3 was reached on day 31, outside the window
    child = journey("UCT-02-017")
    assert {ae["report"]["category"]: ae["worst_grade"] for ae in child["adverse_events"]} == {"CRS": 2, "ICANS": 1}
    assert child["open_queries"] == 0  # blow-by oxygen gives grade 2, CAPD 6 grade 1 or 2: both agree
    safety = stack.get("followup", "/study/safety").json()
    assert safety["aes_not_treatment_emergent"] == 1


def test_a_message_delivered_twice_changes_nothing(stack: RunningStack):
    s = "UCT-02-103"
    treat(stack, s, infusion_days_ago=4)
    ae = {
        "term": "Cytokine release syndrome",
        "category": "CRS",
        "grade": 1,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(3),
    }
    assert stack.command_when_known("followup", f"/subjects/{s}/adverse-events", at(3), ae).status_code == 201
    eventually(lambda: stack.get("followup", f"/subjects/{s}/journey").json().get("ae_count") == 1)

    topic = topic_for("followup", stack.prefix)
    stored = [m for m in asyncio.run(read_topic(stack.bootstrap, topic, 10**6, timeout=3)) if m.subject_id == s]
    assert [m.event_type for m in stored] == ["AEReported"]
    copy = (topic, stored[0].kafka_key(), stored[0].model_dump_json().encode())
    asyncio.run(produce_signed(stack.bootstrap, stack.keys_dir, [copy]))  # signed, as the relay would send it again
    # A later event on the same key (same partition) proves the copy was consumed before it.
    assert stack.command("followup", f"/subjects/{s}/visits", at(3), {"visit_code": "D1"}).status_code == 201
    journey = eventually(
        lambda: (
            (j := stack.get("followup", f"/subjects/{s}/journey").json())
            and stack.get("followup", f"/subjects/{s}/schedule").json()[0]["completed_on"]
            and j
        )
    )
    assert journey["ae_count"] == 1 and journey["worst_crs_grade"] == 1


def test_the_answer_shows_what_was_stored_including_generated_ids(stack: RunningStack):
    s = "UCT-02-104"
    treat(stack, s, infusion_days_ago=2)
    ae = {
        "term": "Fever",
        "category": "OTHER",
        "grade": 1,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(1),
    }
    answer = stack.command_when_known("followup", f"/subjects/{s}/adverse-events", at(1), ae).json()
    (event,) = answer["events"]
    assert event["event_type"] == "AEReported" and event["stream_version"] == 1
    assert event["payload"]["ae_id"] and event["payload"]["term"] == "Fever"
