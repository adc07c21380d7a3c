"""A subject's Audit page in headless Chromium, against the running services: every event in recorded
order with who and why as the API's history gives them, the as-of control (the events recorded by then
and the journey as it was known), the site boundary (404), and the read logged."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Page, expect

from support import RunningStack, at, bearer, eventually, treat
from tests.services.followup.dashboard.browser import Session, sessions

SUBJECT = "UCT-75-001"
CRS_G2_BY_INVESTIGATOR = {  # the findings say grade 3: the rules open a data query
    "term": "Cytokine release syndrome",
    "category": "CRS",
    "grade": 2,
    "serious": False,
    "relatedness": "probable",
    "crs": {"max_temperature_c": 39.0, "oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 8.0},
}


def api(stack: RunningStack, user: str, path: str, **params) -> list | dict:
    answer = stack.client.get(stack.url("followup", path), params=params, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return answer.json()


def history(stack: RunningStack, user: str = "coordinator-01") -> list[dict]:
    found = api(stack, user, f"/subjects/{SUBJECT}/history")
    assert isinstance(found, list)
    return found


@pytest.fixture(scope="module")
def seeded(stack: RunningStack) -> RunningStack:
    """A treated subject at site 01; seconds later a CRS whose grade the findings dispute (a data query),
    then a correction of it with its reason."""
    treat(stack, SUBJECT, infusion_days_ago=6)
    eventually(lambda: api(stack, "test-user", f"/subjects/{SUBJECT}/journey")["infused_on"] is not None)
    time.sleep(1.5)  # the as-of control has a precision of one second
    ae = {**CRS_G2_BY_INVESTIGATOR, "aware_at": at(5)}
    reported = stack.command_when_known("followup", f"/subjects/{SUBJECT}/adverse-events", at(5), ae)
    assert reported.status_code == 201, reported.text
    ae_id = reported.json()["events"][0]["payload"]["ae_id"]
    corrected = stack.post(
        "followup",
        f"/subjects/{SUBJECT}/adverse-event-corrections",
        {
            "occurred_at": at(5),
            "reason": "Grade re-assessed from the chart",
            "payload": {**ae, "grade": 3, "ae_id": ae_id},
        },
    )
    assert corrected.status_code == 201, corrected.text
    eventually(lambda: api(stack, "test-user", f"/subjects/{SUBJECT}/journey")["worst_crs_grade"] == 3)
    return stack


@pytest.fixture
def as_user(browser: Browser, seeded: RunningStack) -> Iterator[Callable[[str | None], Session]]:
    with sessions(browser, seeded.url("followup", "")) as open_as:
        yield open_as


def shown_events(page: Page) -> list[dict[str, str]]:
    found = []
    for row in page.locator("table.events tbody tr.event").all():
        found.append(
            {
                "recorded_at": row.locator(".recorded-at time").get_attribute("datetime") or "",
                "event_type": row.locator(".event-type").inner_text().split("\n")[0].strip(),
                "user_id": row.locator(".who .user").inner_text(),
                "role": row.locator(".who .role").inner_text(),
                "site_id": row.locator(".who .site").inner_text() if row.locator(".who .site").count() else None,
                "why": row.locator(".why").inner_text().strip(),
            }
        )
    return found


def fact(page: Page, name: str):
    """The value of one of the journey's facts on the page."""
    return page.locator("#journey > div").filter(has=page.get_by_text(name, exact=True)).locator("dd")


def expected_events(events: list[dict]) -> list[dict]:
    return [
        {
            "recorded_at": datetime.fromisoformat(e["recorded_at"]).astimezone(UTC).isoformat(),
            "event_type": e["event_type"],
            "user_id": e["recorded_by"]["user_id"],
            "role": e["recorded_by"]["role"],
            "site_id": e["recorded_by"].get("site_id"),
            "why": e["reason"] or "—",
        }
        for e in events
    ]


def test_the_audit_page_lists_every_event_in_recorded_order_with_who_and_why(as_user, seeded: RunningStack):
    page = as_user("coordinator-01").context.new_page()
    page.goto(f"/dashboard/subjects/{SUBJECT}")
    page.get_by_role("link", name="Audit trail").click()
    expect(page).to_have_url(f"/dashboard/subjects/{SUBJECT}/audit")
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Audit trail of {SUBJECT}")
    events = history(seeded)
    shown = shown_events(page)
    assert shown == expected_events(events)
    assert [e["recorded_at"] for e in shown] == sorted(e["recorded_at"] for e in shown)
    types = [e["event_type"] for e in shown]
    for kind in ("Enrolled", "LymphodepletionGiven", "UCARTInfused", "AEReported", "DataQueryOpened", "AECorrected"):
        assert kind in types
    correction = page.locator("table.events tbody tr.event", has=page.locator(".event-type", has_text="AECorrected"))
    expect(correction.locator(".why")).to_have_text("Grade re-assessed from the chart")
    expect(correction.locator(".payload")).to_contain_text("crs.oxygen_flow_l_min")  # the payload, readable


def test_as_of_shows_the_events_recorded_by_then_and_the_journey_as_it_was(as_user, seeded: RunningStack):
    events = history(seeded)
    reported = next(i for i, e in enumerate(events) if e["event_type"] == "AEReported")
    before = datetime.fromisoformat(events[reported - 1]["recorded_at"]).astimezone(UTC)
    moment = before.replace(microsecond=0) + timedelta(seconds=1)  # the control's precision: a second
    assert moment < datetime.fromisoformat(events[reported]["recorded_at"])
    page = as_user("auditor-1").context.new_page()
    page.goto(f"/dashboard/subjects/{SUBJECT}/audit")
    at_the_site = moment.astimezone(ZoneInfo("Europe/Paris"))  # the control reads the site's time (site 01)
    page.get_by_label("Known as of (site time)").fill(at_the_site.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_label("Known as of (site time)").press("Enter")
    expect(page).to_have_url(
        f"/dashboard/subjects/{SUBJECT}/audit?as_of={at_the_site.strftime('%Y-%m-%dT%H%%3A%M%%3A%S')}"
    )
    earlier = [e for e in events if datetime.fromisoformat(e["recorded_at"]) <= moment]
    assert shown_events(page) == expected_events(earlier)
    assert "AEReported" not in [e["event_type"] for e in shown_events(page)]
    then = api(seeded, "auditor-1", f"/subjects/{SUBJECT}/journey", as_of=moment.isoformat())
    now = api(seeded, "auditor-1", f"/subjects/{SUBJECT}/journey")
    assert (len(then["adverse_events"]), len(now["adverse_events"])) == (0, 1)
    expect(fact(page, "Adverse events")).to_have_text("0")
    expect(fact(page, "Status")).to_have_text(then["status"].replace("_", " "))
    expect(fact(page, "Infused")).to_have_text(f"{then['infused_on']} (day 0)")
    expect(fact(page, "Data queries")).to_have_text("0")
    # Now again: everything, and the AE.
    page.get_by_role("link", name="Show everything known now").click()
    assert len(shown_events(page)) == len(events)
    expect(fact(page, "Adverse events")).to_have_text("1")
    expect(fact(page, "Data queries")).to_contain_text("1 · grade: open")
    bad = page.goto(f"/dashboard/subjects/{SUBJECT}/audit?as_of=yesterday")
    assert bad is not None and bad.status == 422
    expect(page.locator("main")).to_contain_text("2026-03-02T09:30")


def test_another_sites_coordinator_gets_404_and_the_read_is_logged(as_user, seeded: RunningStack):
    other = as_user("coordinator-02").context.new_page()
    answer = other.goto(f"/dashboard/subjects/{SUBJECT}/audit")
    assert answer is not None and answer.status == 404
    expect(other.get_by_role("heading", level=1)).to_have_text("Unknown subject")
    expect(other.locator("main")).not_to_contain_text("UCARTInfused")
    sponsor = as_user("sponsor-1").context.new_page()
    refused = sponsor.goto(f"/dashboard/subjects/{SUBJECT}/audit")
    assert refused is not None and refused.status == 403  # the sponsor reads tables only

    def reads() -> list[tuple[str, str, str]]:
        log = api(seeded, "auditor-1", "/access/audit-reads")
        assert isinstance(log, list)
        return [(r["user_id"], r["role"], r["what"]) for r in log if r["subject_id"] == SUBJECT]

    before = reads()
    page = as_user("coordinator-01").context.new_page()
    assert (page.goto(f"/dashboard/subjects/{SUBJECT}/audit") or pytest.fail("no answer")).status == 200
    after = reads()
    assert after[0] == ("coordinator-01", "coordinator", "history (dashboard)")
    assert len(after) == len(before) + 1
    assert not [r for r in after if r[0] in ("coordinator-02", "sponsor-1")]  # refused reads read nothing


def test_the_audit_page_at_800_px_without_javascript(browser: Browser, seeded: RunningStack):
    session = Session(browser, seeded.url("followup", ""), "auditor-1", javascript=False, width=800)
    page = session.context.new_page()
    page.goto(f"/dashboard/subjects/{SUBJECT}/audit")
    first = page.locator("table.events tbody tr.event").first
    expect(first).to_contain_text("Enrolled")
    box = page.locator("table.events").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 800, box  # one event a block, no sideways scroll
    session.close()


def test_the_audit_trail_updates_live_and_logs_each_update_as_a_read(as_user, seeded: RunningStack):
    page = as_user("coordinator-01").context.new_page()
    page.goto(f"/dashboard/subjects/{SUBJECT}/audit")
    shown = len(shown_events(page))
    page.evaluate("window.notReloaded = true")
    reads = len([r for r in api(seeded, "auditor-1", "/access/audit-reads") if r["subject_id"] == SUBJECT])
    fever = {"term": "Fever", "category": "OTHER", "grade": 1, "serious": False, "relatedness": "possible"}
    sent = seeded.command("followup", f"/subjects/{SUBJECT}/adverse-events", at(1), {**fever, "aware_at": at(1)})
    assert sent.status_code == 201, sent.text
    eventually(lambda: len(api(seeded, "test-user", f"/subjects/{SUBJECT}/journey")["adverse_events"]) == 2)
    expect(page.locator("tr.event")).to_have_count(shown + 1, timeout=2000)
    expect(page.locator("tr.event").last).to_contain_text("AEReported")
    assert page.evaluate("window.notReloaded") is True
    logged = [r for r in api(seeded, "auditor-1", "/access/audit-reads") if r["subject_id"] == SUBJECT]
    assert len(logged) > reads and logged[0]["user_id"] == "coordinator-01"
    # A page as of a past moment shows what no new event changes: it is not live.
    page.goto(f"/dashboard/subjects/{SUBJECT}/audit?as_of=2025-01-01T00:00")
    assert page.locator("[data-live]").count() == 0
