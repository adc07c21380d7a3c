"""What a client may send, through the running services: anything outside the documented limits is a
422 problem+json naming the field, and nothing is stored; errors the framework raises are
problem+json too (404, 405 with Allow, 400), as the OpenAPI documents say."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from support import HEADERS, TEST_USER, RunningStack, at, bearer, count_events, enrolment, treat

TREATED = "UCT-51-001"  # infused: commands about it reach the follow-up rules
AE = {"term": "Rash", "category": "OTHER", "grade": 1, "serious": False, "relatedness": "possible"}
PROBLEM = "application/problem+json"


def problem_naming(response: httpx.Response, field: str, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert field in problem["detail"], problem["detail"]
    if status == 422 and "errors" in problem:
        assert any(e["field"].endswith(field) for e in problem["errors"]), problem["errors"]
    return problem


def refused(
    stack: RunningStack,
    service: str,
    path: str,
    field: str,
    *,
    body: dict | None = None,
    text: str | None = None,
    headers: dict | None = None,
) -> dict:
    """POST `body` (or raw JSON `text`): 422 naming `field`, and nothing stored."""
    before = count_events(stack.database_url, service)
    response = stack.client.post(
        stack.url(service, path),
        json=body,
        content=text,
        headers={**HEADERS, "Content-Type": "application/json", **(headers or {})},
    )
    problem = problem_naming(response, field)
    assert count_events(stack.database_url, service) == before, "a refused command stored an event"
    return problem


def cmd(occurred_at: str, payload: dict, **fields) -> dict:
    return {"occurred_at": occurred_at, "payload": payload, **fields}


@pytest.fixture(scope="module")
def treated(stack: RunningStack) -> str:
    """TREATED is infused and has an AE: the AE's id."""
    treat(stack, TREATED, infusion_days_ago=6)
    reported = stack.command_when_known(
        "followup", f"/subjects/{TREATED}/adverse-events", at(5), AE | {"aware_at": at(5)}
    )
    assert reported.status_code == 201, reported.text
    return reported.json()["events"][0]["payload"]["ae_id"]


# --- text ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("term", ["Rash\x00", "Rash\x07", "Rash\x1b[2J", "Rash\nFever", "Rash\x85"])
def test_nul_and_control_characters_in_an_ae_term_are_refused(stack: RunningStack, treated: str, term: str):
    path = f"/subjects/{TREATED}/adverse-events"
    problem = refused(stack, "followup", path, "payload.term", body=cmd(at(4), AE | {"term": term, "aware_at": at(4)}))
    assert "character" in problem["detail"] and "remove it" in problem["detail"]


def test_a_reason_may_span_lines_but_holds_no_nul(stack: RunningStack, treated: str):
    path = f"/subjects/{TREATED}/adverse-event-updates"
    update = {"ae_id": treated, "outcome": "recovering"}
    refused(stack, "followup", path, "reason", body=cmd(at(3), update, reason="seen\x00 at the visit"))
    accepted = stack.post("followup", path, cmd(at(3), update, reason="Seen at the visit.\nRecovering."))
    assert accepted.status_code == 201, accepted.text


def test_control_characters_in_free_text_are_refused_but_line_breaks_kept(stack: RunningStack):
    path = "/subjects/UCT-51-011/screen-failure"
    for reason in ("CD19\x00 negative", "CD19 \x1b[31mnegative"):
        refused(
            stack,
            "enrollment",
            path,
            "payload.failure_reason",
            body=cmd(at(1), {"site_id": "51", "failure_reason": reason}),
        )
    accepted = stack.post("enrollment", path, cmd(at(1), {"site_id": "51", "failure_reason": "CD19 negative\non flow"}))
    assert accepted.status_code == 201, accepted.text


# --- numbers, types and dates -------------------------------------------------------------------


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_numbers_are_finite(stack: RunningStack, treated: str, number: str):
    sample = f'{{"occurred_at": "{at(2)}", "payload": {{"qpcr_copies_per_ug_dna": {number}}}}}'
    refused(
        stack, "followup", f"/subjects/{TREATED}/persistence-samples", "payload.qpcr_copies_per_ug_dna", text=sample
    )
    correction = (
        f'{{"occurred_at": "{at(6)}", "reason": "dose", "payload": {{"dose_cells_per_kg": {number}, '
        '"dose_level": 1, "product_lot": "LOT-1", "donor_id": "D-1"}}'
    )
    refused(
        stack, "treatment", f"/subjects/{TREATED}/infusion-corrections", "payload.dose_cells_per_kg", text=correction
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("year_of_birth", "1980"),
        ("year_of_birth", 1980.5),
        ("cd19_positive", "yes"),
        ("cd19_positive", 1),
        ("cd19_positive", "true"),
        ("consent_signed_on", 0),
        ("consent_signed_on", "0"),
    ],
)
def test_types_are_strict(stack: RunningStack, field: str, value: object):
    refused(
        stack,
        "enrollment",
        "/subjects/UCT-51-021/enrolment",
        f"payload.{field}",
        body=cmd(at(3), enrolment(3) | {field: value}),
    )


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"year_of_birth": 2100}, "is after the year consent was signed"),
        ({"year_of_birth": int(at(3)[:4]) + 1}, "is after the year consent was signed"),
        ({"year_of_birth": 1900}, "the protocol enrols ages 1 to 75"),
        ({"year_of_birth": int(at(3)[:4]) - 76}, "the protocol enrols ages 1 to 75"),
        ({"consent_signed_on": "2023-12-31"}, "is before the study started (2024-01-01)"),
        ({"consent_signed_on": "0001-01-01"}, "is not a date of this study (years 1900 to 2100)"),
    ],
)
def test_implausible_dates_are_refused(stack: RunningStack, changes: dict, words: str):
    problem = refused(
        stack,
        "enrollment",
        "/subjects/UCT-51-031/enrolment",
        next(iter(changes)),
        body=cmd(at(3), enrolment(3) | changes),
    )
    assert words in problem["detail"] and problem["title"] == "Invalid input"


@pytest.mark.parametrize("aware_at", ["9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"])
def test_times_out_of_the_study_years_are_refused(stack: RunningStack, treated: str, aware_at: str):
    # Stored, 9999-12-31T23:59:59-14:00 would overflow the SAE clock (+24 h) on every read of it.
    refused(
        stack,
        "followup",
        f"/subjects/{TREATED}/adverse-events",
        "payload.aware_at",
        body=cmd(at(4), AE | {"aware_at": aware_at}),
    )


def test_no_time_in_a_command_lies_ahead(stack: RunningStack, treated: str):
    ahead = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0).isoformat()
    problem = refused(
        stack,
        "followup",
        f"/subjects/{TREATED}/adverse-events",
        "payload.aware_at",
        body=cmd(at(4), AE | {"aware_at": ahead}),
    )
    assert "is in the future" in problem["detail"]
    report = {"ae_id": treated, "report": "sae_to_sponsor", "received_at": ahead}
    refused(stack, "followup", f"/subjects/{TREATED}/safety-reports", "payload.received_at", body=cmd(at(1), report))
    consent = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    refused(
        stack,
        "enrollment",
        "/subjects/UCT-51-041/enrolment",
        "payload.consent_signed_on",
        body=cmd(at(1), enrolment(1) | {"consent_signed_on": consent}),
    )


def test_a_valid_enrolment_is_still_accepted(stack: RunningStack):
    oldest = {**enrolment(3), "year_of_birth": int(enrolment(3)["consent_signed_on"][:4]) - 75}
    response = stack.post("enrollment", "/subjects/UCT-51-041/enrolment", cmd(at(3), oldest))
    assert response.status_code == 201, response.text


# --- headers and query parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Correlation-Id", "0"),
        ("X-Causation-Id", "null"),
        ("Idempotency-Key", "has spaces in it"),
        ("Idempotency-Key", "k" * 201),
    ],
)
def test_headers_past_their_limits_are_refused(stack: RunningStack, header: str, value: str | bytes):
    refused(
        stack,
        "enrollment",
        "/subjects/UCT-51-051/enrolment",
        f"header {header.lower()}",
        body=cmd(at(3), enrolment(3)),
        headers={header: value},
    )


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Basic dXNlcjpwYXNz",
        "Bearer not-a-jwt",
        "Bearer " + "x" * 5000,
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0ZXN0LXVzZXIifQ.",  # alg "none"
        "caf\xe9".encode("latin-1"),
    ],
)
def test_an_authorization_that_is_not_a_valid_token_is_a_401_and_stores_nothing(
    stack: RunningStack, authorization: str | bytes
):
    before = count_events(stack.database_url, "enrollment")
    response = stack.client.post(
        stack.url("enrollment", "/subjects/UCT-51-051/enrolment"),
        json=cmd(at(3), enrolment(3)),
        headers={"Authorization": authorization},
    )
    problem_naming(response, "access token", status=401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert count_events(stack.database_url, "enrollment") == before


def test_identity_headers_a_client_sets_are_ignored_and_none_can_claim_the_rules_identity(stack: RunningStack):
    headers = {"X-User-Id": "ucart-rules", "X-User-Role": "system"}
    response = stack.post("enrollment", "/subjects/UCT-51-052/enrolment", cmd(at(3), enrolment(3)), headers)
    assert response.status_code == 201, response.text
    history = stack.get("followup", "/subjects/UCT-51-052/history", headers=bearer("auditor-1"))
    recorded_by = [e["recorded_by"] for e in history.json()]
    assert recorded_by == [{"user_id": TEST_USER, "role": "investigator", "site_id": "01"}]


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/subjects", "on"),
        ("/subjects/UCT-51-001/journey", "on"),
        ("/subjects/UCT-51-001/journey", "as_of"),
        ("/subjects/UCT-51-001/schedule", "effective_on"),
        ("/followups", "on"),
        ("/safety-reports", "at"),
        ("/study/safety", "on"),
        ("/study/efficacy", "on"),
    ],
)
@pytest.mark.parametrize("value", ["0", "1.5e9", "null", "2026-03-02\x00", "2026-W10-1", "20260302"])
def test_dates_in_a_query_are_iso_only(stack: RunningStack, path: str, param: str, value: str):
    problem_naming(stack.get("followup", path, **{param: value}), f"query.{param}")


def test_iso_dates_in_a_query_are_accepted(stack: RunningStack, treated: str):
    journey = stack.get("followup", f"/subjects/{TREATED}/journey", on=at(0)[:10], as_of=at(0))
    assert journey.status_code == 200, journey.text
    assert stack.get("followup", "/safety-reports", at="2026-03-02T09:30:00+01:00").status_code == 200


@pytest.mark.parametrize("status", ["null", "late\x00"])
def test_a_status_filter_names_a_status(stack: RunningStack, status: str):
    problem_naming(stack.get("followup", "/followups", status=status), "query.status.0")


# --- errors the framework raises ----------------------------------------------------------------


def test_an_unsupported_method_is_405_with_allow(stack: RunningStack):
    response = stack.client.delete(stack.url("enrollment", "/subjects/UCT-51-001/enrolment"))
    problem = problem_naming(response, "DELETE", status=405)
    assert response.headers["allow"] == "POST" and "POST" in problem["detail"]


def test_an_unknown_path_is_404_problem(stack: RunningStack):
    problem = problem_naming(stack.get("treatment", "/no/such/path"), "/no/such/path", status=404)
    assert problem["title"] == "Not Found"


def test_a_body_that_is_not_utf8_json_is_400_problem(stack: RunningStack):
    before = count_events(stack.database_url, "enrollment")
    response = stack.client.post(
        stack.url("enrollment", "/subjects/UCT-51-061/enrolment"),
        content=b"\xff\xfe{",
        headers={**HEADERS, "Content-Type": "application/json"},
    )
    problem_naming(response, "JSON", status=400)
    assert count_events(stack.database_url, "enrollment") == before


# --- the OpenAPI documents say all of it --------------------------------------------------------


def operations(stack: RunningStack, service: str) -> dict:
    return stack.client.get(stack.url(service, "/openapi.json")).json()


@pytest.mark.parametrize("service", ["enrollment", "treatment", "followup"])
def test_every_error_answer_is_documented_as_problem_json(stack: RunningStack, service: str):
    document = operations(stack, service)
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail", "instance"]
    for path, methods in document["paths"].items():
        if path == "/ready":  # its 503 is the health report (application/json), not a refusal
            assert list(methods["get"]["responses"]["503"]["content"]) == ["application/json"]
            continue
        for method, operation in methods.items():
            errors = {status: answer for status, answer in operation["responses"].items() if status >= "400"}
            assert all(list(answer["content"]) == [PROBLEM] for answer in errors.values()), (method, path, errors)
            if path not in ("/health", "/metrics"):  # everything else needs a token, and says so
                assert {"401", "403"} <= set(errors), (method, path)
                assert operation.get("security") == [{"HTTPBearer": []}], (method, path)
            if path.startswith("/subjects/{subject_id}"):
                assert {"404", "422", "503"} <= set(errors), (method, path)
            if method == "post" and path.startswith("/subjects/"):
                assert set(errors) == {"400", "401", "403", "404", "409", "422", "503"}, (method, path)


def test_headers_and_query_dates_are_documented_with_their_limits_and_identity_is_no_header(stack: RunningStack):
    enrol = operations(stack, "enrollment")["paths"]["/subjects/{subject_id}/enrolment"]["post"]
    headers = {p["name"]: p["schema"] for p in enrol["parameters"] if p["in"] == "header"}
    assert "x-user-id" not in headers and "x-user-role" not in headers  # who acts comes from the token
    assert (headers["x-correlation-id"]["type"], headers["x-correlation-id"]["format"]) == ("string", "uuid")
    journey = operations(stack, "followup")["paths"]["/subjects/{subject_id}/journey"]["get"]
    query = {p["name"]: p["schema"] for p in journey["parameters"] if p["in"] == "query"}
    assert (query["on"]["format"], query["as_of"]["format"]) == ("date", "date-time")
    assert "anyOf" not in json.dumps([query, headers])  # absent or a value, never null


def test_the_history_documents_its_formats(stack: RunningStack):
    history = operations(stack, "followup")["paths"]["/subjects/{subject_id}/history"]["get"]
    assert set(history["responses"]["200"]["content"]) == {"application/json", "application/x-ndjson", "text/csv"}
