"""Every dashboard page for every role, as the policy says (a matrix generated from the policy itself,
as the API's is): a page the role may not see answers 403, and a subject of a site outside the role's
grant answers 404. Plain HTTP with the session cookie: what each page answers does not need a browser."""

from __future__ import annotations

import httpx
import pytest

from infra.identities import Person, grant_all
from shared.access.policy import ROLES, Action, scope
from support import ISSUER, RunningStack, eventually, treat

OWN, OTHER = "UCT-76-001", "UCT-77-001"  # at site 01 and site 02
PEOPLE = [Person(f"pages-{role}", role, ("01",), role) for role in ROLES]
PAGES: list[tuple[str, Action]] = [
    ("/dashboard/subjects", Action.READ),
    ("/dashboard/subjects/{subject}", Action.READ),
    ("/dashboard/subjects/{subject}/audit", Action.AUDIT_TRAIL),
    ("/dashboard/worklists", Action.READ),
    ("/dashboard/study", Action.STUDY_TABLES),
]


@pytest.fixture(scope="module")
def subjects(stack: RunningStack) -> RunningStack:
    grant_all(stack.database_url, PEOPLE, "dashboard page matrix")
    for subject, site in ((OWN, "01"), (OTHER, "02")):
        treat(stack, subject, infusion_days_ago=3, site=site)
        eventually(lambda s=subject: stack.get("followup", f"/subjects/{s}/journey").status_code == 200)
    return stack


@pytest.mark.parametrize("role", ROLES)
def test_each_role_sees_the_pages_the_policy_gives_it_and_no_other_sites_subject(subjects: RunningStack, role: str):
    cookies = {"ucart_session": ISSUER.token(f"pages-{role}")}
    wrong = []
    with httpx.Client(base_url=subjects.url("followup", ""), cookies=cookies, timeout=30) as client:
        for template, action in PAGES:
            where = scope(role, action)
            for subject in (OWN, OTHER) if "{subject}" in template else (OWN,):
                hidden = subject == OTHER and where == "sites"
                expected = 403 if where is None else 404 if hidden else 200
                status = client.get(template.format(subject=subject)).status_code
                if status != expected:
                    wrong.append(f"{template.format(subject=subject)}: {status}, expected {expected}")
    assert not wrong, "\n".join(wrong)
