"""The protocol's clinical features through HTTP: derived grades and data queries, safety reporting
clocks, infusion corrections, the study-wide follow-up list and the study tables."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from infra import seed
from support import RunningStack, at, eventually, journey_caught_up, treat

CRS_G2_BY_INVESTIGATOR = {  # the findings say grade 3: 8 L/min by nasal cannula is above the 6 L/min limit
    "term": "Cytokine release syndrome",
    "category": "CRS",
    "grade": 2,
    "serious": False,
    "relatedness": "probable",
    "crs": {"max_temperature_c": 39.0, "oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 8.0},
}


def journey(stack: RunningStack, subject: str, **params) -> dict:
    return stack.get("followup", f"/subjects/{subject}/journey", **params).json()


def test_a_grade_disagreement_opens_a_data_query_that_is_answered_and_closed(stack: RunningStack):
    s = "UCT-05-301"
    treat(stack, s, infusion_days_ago=6)
    answer = stack.command_when_known(
        "followup", f"/subjects/{s}/adverse-events", at(5), {**CRS_G2_BY_INVESTIGATOR, "aware_at": at(5)}
    ).json()
    ae, query = answer["events"]
    assert ae["event_type"] == "AEReported" and query["event_type"] == "DataQueryOpened"
    assert (query["payload"]["recorded_value"], query["payload"]["expected_value"]) == ("2", "3")
    query_id = query["payload"]["query_id"]

    eventually(lambda: journey(stack, s).get("open_queries") == 1)
    assert journey(stack, s)["worst_crs_grade"] == 2  # the investigator's grade is not overwritten
    listed = stack.get("followup", "/queries", status="open").json()
    assert query_id in {q["query_id"] for q in listed if q["subject_id"] == s}

    close = {"query_id": query_id, "resolution": "Accepted."}
    early = stack.command("followup", f"/subjects/{s}/query-closures", at(4), close)
    assert early.status_code == 409 and "not been answered" in early.json()["detail"]
    assert (
        stack.command(
            "followup",
            f"/subjects/{s}/query-answers",
            at(4),
            {"query_id": query_id, "answer": "Flow was 4 L/min; findings corrected."},
        ).status_code
        == 201
    )
    assert stack.command("followup", f"/subjects/{s}/query-closures", at(3), close).status_code == 201
    eventually(lambda: journey(stack, s).get("open_queries") == 0)
    assert journey(stack, s)["queries"][0]["status"] == "closed"


def test_a_serious_ae_starts_the_24_hour_sponsor_clock(stack: RunningStack):
    s = "UCT-05-302"
    treat(stack, s, infusion_days_ago=5)
    aware = datetime.now(UTC) - timedelta(hours=30)
    ae = {
        "term": "Febrile neutropenia",
        "category": "INFECTION",
        "grade": 3,
        "serious": True,
        "seriousness_criteria": ["hospitalisation"],
        "relatedness": "possible",
        "expected": False,
        "aware_at": aware.isoformat(),
    }
    recorded = stack.command_when_known(
        "followup", f"/subjects/{s}/adverse-events", (aware - timedelta(hours=2)).isoformat(), ae
    )
    ae_id = recorded.json()["events"][0]["payload"]["ae_id"]

    def reports(**params) -> dict:
        rows = stack.get("followup", "/safety-reports", **params).json()
        return {r["report"]: r for r in rows if r["subject_id"] == s}

    eventually(lambda: reports())
    assert reports(at=(aware + timedelta(hours=23)).isoformat())["sae_to_sponsor"]["status"] == "due"
    sae = reports()["sae_to_sponsor"]
    assert sae["status"] == "overdue"
    assert datetime.fromisoformat(sae["due_at"]) == aware + timedelta(hours=24)
    assert reports()["susar_to_regulator"]["status"] == "awaiting_sponsor_receipt"  # suspected and unexpected

    received = aware + timedelta(hours=20)
    assert (
        stack.command(
            "followup",
            f"/subjects/{s}/safety-reports",
            at(0),
            {"ae_id": ae_id, "report": "sae_to_sponsor", "received_at": received.isoformat()},
        ).status_code
        == 201
    )
    eventually(lambda: reports()["sae_to_sponsor"]["status"] == "submitted")
    susar = reports()["susar_to_regulator"]
    assert datetime.fromisoformat(susar["due_at"]) == received + timedelta(days=15)  # not fatal: 15 days


def test_an_infusion_correction_needs_a_reason_and_moves_day_0(stack: RunningStack):
    s = "UCT-05-303"
    treat(stack, s, infusion_days_ago=10)
    corrected = {"dose_cells_per_kg": 1e7, "dose_level": 1, "product_lot": "LOT-1", "donor_id": "D-1"}
    path = f"/subjects/{s}/infusion-corrections"
    no_reason = stack.command("treatment", path, at(9), corrected)
    assert no_reason.status_code == 422 and "reason" in no_reason.json()["detail"]
    eventually(lambda: journey(stack, s).get("infused_on"))
    before = {v["code"]: v["target_date"] for v in stack.get("followup", f"/subjects/{s}/schedule").json()}
    response = stack.post(
        "treatment", path, {"occurred_at": at(9), "reason": "Entered a day early", "payload": corrected}
    )
    assert response.status_code == 201, response.text
    eventually(lambda: journey(stack, s)["infusion_corrected_from"])
    after = {v["code"]: v["target_date"] for v in stack.get("followup", f"/subjects/{s}/schedule").json()}
    assert all(date.fromisoformat(after[c]) == date.fromisoformat(before[c]) + timedelta(days=1) for c in before)


def test_overdue_visits_across_the_study(stack: RunningStack):
    s = "UCT-05-304"
    treat(stack, s, infusion_days_ago=9)
    assert stack.command_when_known("followup", f"/subjects/{s}/visits", at(8), {"visit_code": "D1"}).status_code == 201
    on = date.fromisoformat(at(0)[:10])

    def overdue() -> set[str]:
        rows = stack.get("followup", "/followups", status="overdue", on=on.isoformat()).json()
        assert all(r["status"] == "overdue" for r in rows)
        return {r["code"] for r in rows if r["subject_id"] == s}

    eventually(lambda: overdue() == {"D4", "D7", "PERS_D7"})  # D1 done; D10 (day 9-11) is due, not overdue
    later = stack.get("followup", "/followups", status="overdue", on=(on + timedelta(days=3)).isoformat()).json()
    assert {"D4", "D7", "PERS_D7", "D10"} <= {r["code"] for r in later if r["subject_id"] == s}


def test_study_tables_of_the_demo_cohort(cohort_stack: RunningStack):
    cohort = seed.cohort()
    infused = [c for c in cohort if any(step.path == "infusion" for step in c.steps)]
    w4_remission = [
        c
        for c in infused
        if any(
            step.path == "response-assessments"
            and step.payload["timepoint"] == "W4"
            and step.payload["response"] in ("CR", "CRi")
            for step in c.steps
        )
    ]

    eventually(lambda: journey_caught_up(cohort_stack.database_url))
    table = cohort_stack.get("followup", "/study/efficacy").json()
    assert table["subjects_infused"] == len(infused)
    w4 = next(r for r in table["orr"] if r["timepoint"] == "W4")
    assert (w4["numerator"], w4["denominator"]) == (len(w4_remission), len(infused))
    deaths = [c for c in infused if any(step.path == "death" for step in c.steps)]
    assert table["os"]["not_censored_at_subsequent_therapy"]["events"] == len(deaths)

    safety = cohort_stack.get("followup", "/study/safety").json()
    assert safety["subjects"] == len(infused)
    # CRS or ICANS grade >= 3 within 28 days, at least possibly related: UCT-02-004 and UCT-02-011.
    assert safety["dlt"]["subjects_with_dlt"] == 2
    assert safety["crs"]["grade_3_or_higher"] == 2
    assert safety["susar"] == {"subjects": 1, "events": 1}  # the unexpected grade 4 ICANS of UCT-02-011
    dlt = {
        s: cohort_stack.get("followup", f"/subjects/{s}/journey").json()["had_dlt"]
        for s in ("UCT-02-004", "UCT-01-003")
    }
    assert dlt == {"UCT-02-004": True, "UCT-01-003": False}
    open_queries = cohort_stack.get("followup", "/queries", status="open").json()
    assert [q["subject_id"] for q in open_queries] == ["UCT-01-003"]


def test_day_0_is_the_site_s_local_date(stack: RunningStack):
    from support import FLU_CY, INFUSION, enrolment

    s = "UCT-05-305"
    new_york = timezone(timedelta(hours=-5))
    evening = (datetime.now(new_york) - timedelta(days=2)).replace(hour=23, minute=0, second=0, microsecond=0)
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(9), enrolment(9)).status_code == 201
    for days_before in (5, 4, 3):
        ld = stack.command_when_known(
            "treatment",
            f"/subjects/{s}/lymphodepletion-days",
            (evening - timedelta(days=days_before)).isoformat(),
            FLU_CY,
        )
        assert ld.status_code == 201, ld.text
    assert stack.command("treatment", f"/subjects/{s}/infusion", evening.isoformat(), INFUSION).status_code == 201
    # 23:40 the same evening in New York is already the next day in UTC: still day 0 at the site.
    onset = evening + timedelta(minutes=40)
    ae = {
        "term": "Fever",
        "category": "OTHER",
        "grade": 1,
        "serious": False,
        "relatedness": "possible",
        "aware_at": onset.isoformat(),
    }
    response = stack.command_when_known("followup", f"/subjects/{s}/adverse-events", onset.isoformat(), ae)
    assert response.status_code == 201, response.text
    eventually(lambda: journey(stack, s).get("infused_on") == evening.date().isoformat())
    assert journey(stack, s, on=(evening.date() + timedelta(days=1)).isoformat())["study_day"] == 1


def test_a_death_inside_the_dlt_window_without_a_dlt_is_not_dlt_evaluable(stack: RunningStack):
    died, lived = "UCT-14-001", "UCT-14-002"
    for subject in (died, lived):
        treat(stack, subject, infusion_days_ago=40)
    death = {"primary_cause": "disease_progression"}
    assert stack.command_when_known("followup", f"/subjects/{died}/death", at(30), death).status_code == 201  # day 10

    def evaluable(subject: str) -> bool | None:
        return stack.get("followup", f"/subjects/{subject}/journey").json()["dlt_evaluable"]

    eventually(lambda: stack.get("followup", f"/subjects/{died}/journey").json()["status"] == "died")
    assert (evaluable(died), evaluable(lived)) == (False, True)
