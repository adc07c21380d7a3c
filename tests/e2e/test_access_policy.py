"""The access policy, enforced on every route: a matrix generated from the policy itself (each role
against each route of the three OpenAPI documents), and the site isolation of site staff.

A route with no permit in the policy fails the matrix: every route but /health, /ready and /metrics
needs one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from infra.identities import Person, grant_all
from services.enrollment.main import SPEC as ENROLLMENT
from services.followup.main import SPEC as FOLLOWUP
from services.treatment.main import SPEC as TREATMENT
from shared.access.policy import ROLES, Action, scope
from shared.config import Settings
from shared.contract.topics import SOURCES
from shared.http.routes import every_route
from shared.service import build_app
from shared.signing import ensure_keys
from support import RunningStack, at, bearer, enrolment, eventually, treat

OPEN = {"/health", "/ready", "/metrics"}  # no token (/metrics: UCART_METRICS_OPEN, the default)
OWN, OTHER = "UCT-61-001", "UCT-62-001"  # at site 01 and site 02
MATRIX = [Person(f"matrix-{role}", role, ("01",), role) for role in ROLES]


def _actions(spec, keys: Path) -> dict[tuple[str, str], Action | None]:
    """(method, path) -> the action its permit names, read from the app's own dependencies."""
    settings = Settings(_env_file=None, database_url="postgresql://unused@localhost/unused", keys_dir=keys)
    app = build_app(spec, settings)
    found: dict[tuple[str, str], Action | None] = {}
    for route in every_route(app):
        if not isinstance(route, APIRoute):
            continue
        stack, names = [route.dependant], []
        while stack:
            dependant = stack.pop()
            names.append(getattr(dependant.call, "__name__", ""))
            stack.extend(dependant.dependencies)
        permits = [Action(n.removeprefix("permit_")) for n in names if n.startswith("permit_")]
        for method in route.methods:
            found[(method.lower(), route.path)] = permits[0] if permits else None
    return found


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> dict[str, dict[tuple[str, str], Action | None]]:
    keys = tmp_path_factory.mktemp("keys")
    ensure_keys(keys, SOURCES)  # an app is built only with its service's key
    return {spec.name: _actions(spec, keys) for spec in (ENROLLMENT, TREATMENT, FOLLOWUP)}


@pytest.fixture(scope="module")
def subjects(stack: RunningStack) -> RunningStack:
    grant_all(stack.database_url, MATRIX, "policy matrix")
    for subject, site in ((OWN, "01"), (OTHER, "02")):
        treat(stack, subject, infusion_days_ago=3, site=site)
        eventually(lambda s=subject: stack.get("followup", f"/subjects/{s}/journey").status_code == 200)
    return stack


def test_every_documented_route_is_in_the_policy(stack: RunningStack, routes):
    for service, service_routes in routes.items():
        document = stack.client.get(stack.url(service, "/openapi.json")).json()
        for path, methods in document["paths"].items():
            for method in methods:
                if path in OPEN:
                    assert service_routes[(method, path)] is None, (service, method, path)
                    continue
                assert service_routes.get((method, path)) is not None, (
                    f"{service}: {method.upper()} {path} has no permit"
                )


def _url(path: str, subject: str) -> str:
    return path.replace("{subject_id}", subject).replace("{user_id}", "matrix-auditor")


@pytest.mark.parametrize("role", ROLES)
def test_each_role_may_do_what_the_policy_says_where_it_says(subjects: RunningStack, routes, role: str):
    stack, headers, wrong = subjects, bearer(f"matrix-{role}"), []
    for service, service_routes in routes.items():
        for (method, path), action in sorted(service_routes.items(), key=str):
            if action is None:
                continue
            where = scope(role, action)
            for subject in (OWN, OTHER) if "{subject_id}" in path else (OWN,):
                url = stack.url(service, _url(path, subject))
                if method == "get":
                    status = stack.client.get(url, headers=headers).status_code
                    hidden = subject == OTHER and where == "sites"  # another site's subject: not found
                    expected = 403 if where is None else 404 if hidden else 200
                else:  # an empty body: past the permit, the body is refused
                    status = stack.client.post(url, json={}, headers=headers).status_code
                    expected = 403 if where is None else 422
                if status != expected:
                    wrong.append(f"{service} {method.upper()} {_url(path, subject)}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)


def test_site_staff_cannot_read_list_or_write_another_sites_subjects(subjects: RunningStack):
    stack, site_02 = subjects, bearer("coordinator-02")
    for service, path in (
        ("enrollment", f"/subjects/{OWN}"),
        ("treatment", f"/subjects/{OWN}"),
        ("followup", f"/subjects/{OWN}/journey"),
        ("followup", f"/subjects/{OWN}/schedule"),
        ("followup", f"/subjects/{OWN}/history"),
    ):
        assert stack.get(service, path, headers=site_02).status_code == 404, (service, path)
    listed = {s["subject_id"] for s in stack.get("followup", "/subjects", headers=site_02).json()}
    assert OTHER in listed and OWN not in listed
    for path in ("/followups", "/queries", "/safety-reports"):
        assert all(row["site_id"] == "02" for row in stack.get("followup", path, headers=site_02).json()), path
    visit = {"occurred_at": at(1), "payload": {"visit_code": "D1"}}
    refused = stack.post("followup", f"/subjects/{OWN}/visits", visit, headers=site_02)
    assert refused.status_code == 404 and refused.json()["title"] == "Unknown subject"
    enrol = {"occurred_at": at(1), "payload": enrolment(1)}  # a new subject at site 01
    assert stack.post("enrollment", "/subjects/UCT-61-002/enrolment", enrol, headers=site_02).status_code == 404
    # Their own site's subject, once follow-up has learned it (a retryable 404 until then).
    eventually(lambda: stack.post("followup", f"/subjects/{OTHER}/visits", visit, headers=site_02).status_code == 201)


def test_the_sponsor_sees_study_tables_but_no_subject(subjects: RunningStack):
    stack, sponsor = subjects, bearer("sponsor-1")
    assert stack.get("followup", "/study/efficacy", headers=sponsor).status_code == 200
    assert stack.get("followup", "/subjects", headers=sponsor).status_code == 403
    assert stack.get("followup", f"/subjects/{OWN}/journey", headers=sponsor).status_code == 403


def test_study_tables_count_only_the_subjects_the_caller_may_see(subjects: RunningStack):
    stack = subjects
    everyone = stack.get("followup", "/study/safety").json()
    own_site_only = stack.get("followup", "/study/safety", headers=bearer("matrix-investigator")).json()
    assert own_site_only["subjects"] < everyone["subjects"]
