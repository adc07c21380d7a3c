"""The dashboard in headless Chromium, against the running services: each page for each role, the
site boundary (also by URL), list -> subject, and no request leaving 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from support import RunningStack, at, enrolment, eventually, treat
from tests.services.followup.dashboard.browser import Session, serious_violations, sessions

SITE_01, SITE_02 = "UCT-71-001", "UCT-72-001"


@pytest.fixture(scope="module")
def subjects(stack: RunningStack) -> RunningStack:
    """A treated subject with an AE at site 01, an enrolled one at site 02, both in the journey."""
    treat(stack, SITE_01, infusion_days_ago=12)
    ae = {
        "term": "Cytokine release syndrome",
        "category": "CRS",
        "grade": 2,
        "serious": False,
        "relatedness": "probable",
        "expected": True,
        "aware_at": at(10, 12),
        "crs": {"max_temperature_c": 39.1, "hypotension": True},
    }
    assert stack.command_when_known("followup", f"/subjects/{SITE_01}/adverse-events", at(10), ae).status_code == 201
    samples = ((7, "PERS_D7", 15000.0, 4.2), (10, None, 90000.0, 11.5))
    for days_after, visit, copies, pct in samples:
        sample = {"visit_code": visit, "qpcr_copies_per_ug_dna": copies, "flow_car_pct_of_cd3": pct}
        path = f"/subjects/{SITE_01}/persistence-samples"
        # When known: the follow-up service learns the infusion from Kafka, maybe after the AE was accepted.
        recorded = stack.command_when_known("followup", path, at(12 - days_after), sample)
        assert recorded.status_code == 201, recorded.text
    enrolled = stack.command("enrollment", f"/subjects/{SITE_02}/enrolment", at(3), {**enrolment(3), "site_id": "02"})
    assert enrolled.status_code == 201, enrolled.text
    for subject in (SITE_01, SITE_02):
        eventually(lambda s=subject: stack.get("followup", f"/subjects/{s}/journey").status_code == 200)
    eventually(lambda: len(stack.get("followup", f"/subjects/{SITE_01}/journey").json()["adverse_events"]) == 1)
    eventually(lambda: len(stack.get("followup", f"/subjects/{SITE_01}/journey").json()["persistence"]) == 2)
    return stack


@pytest.fixture
def as_user(browser: Browser, subjects: RunningStack) -> Iterator:
    with sessions(browser, subjects.url("followup", "")) as open_as:
        yield open_as


def test_a_coordinator_lists_their_sites_subjects_and_opens_one(as_user):
    page = as_user("coordinator-01").context.new_page()
    page.goto("/")
    expect(page).to_have_url("/dashboard/subjects")
    expect(page.get_by_role("heading", name="Subjects")).to_be_visible()
    expect(page.get_by_role("link", name=SITE_01)).to_be_visible()
    expect(page.get_by_role("link", name=SITE_02)).to_have_count(0)
    page.get_by_role("link", name=SITE_01).click()
    expect(page).to_have_url(f"/dashboard/subjects/{SITE_01}")
    expect(page.get_by_role("heading", name=SITE_01)).to_be_visible()
    expect(page.get_by_role("img", name="Swimmer lane")).to_be_visible()
    # Dates are the site's (site 01: Paris), each with its study day.
    facts = page.locator("dl.facts")
    expect(facts).to_contain_text("01 (Europe/Paris)")
    expect(facts.locator("div").filter(has=page.locator("dt", has_text="Infused"))).to_contain_text("(day 0)")
    expect(facts.locator("div").filter(has=page.locator("dt", has_text="Enrolled"))).to_contain_text("(day -")
    # The CRS is a bar of its grade in the lane, and a row with its dated grade history in the AE table.
    assert page.locator("svg .ae-g2 rect").count() == 1
    expect(page.get_by_role("row", name="Cytokine release syndrome")).to_contain_text("G2")
    # Persistence: two samples on the chart, the larger qPCR count drawn higher (log scale), and the table.
    expect(page.get_by_role("img", name="CAR-T persistence")).to_be_visible()
    heights = [float(c.get_attribute("cy") or 0) for c in page.locator("svg.persistence circle.qpcr-point").all()]
    assert len(heights) == 2 and heights[1] < heights[0]
    assert page.locator("svg.persistence rect.car-point").count() == 2
    expect(page.get_by_role("cell", name="90,000")).to_be_visible()


def test_a_site_02_coordinator_never_sees_a_site_01_subject_not_even_by_url(as_user):
    page = as_user("coordinator-02").context.new_page()
    page.goto("/dashboard/subjects")
    expect(page.get_by_role("link", name=SITE_02)).to_be_visible()
    expect(page.get_by_role("link", name=SITE_01)).to_have_count(0)
    answer = page.goto(f"/dashboard/subjects/{SITE_01}")
    assert answer is not None and answer.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Unknown subject")
    expect(page.locator("main")).not_to_contain_text("Cytokine")


def test_filters_by_status_and_code_search(as_user):
    page = as_user("test-user").context.new_page()
    page.goto("/dashboard/subjects")
    page.get_by_label("Study code").fill(SITE_02)
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("link", name=SITE_02)).to_be_visible()
    expect(page.get_by_role("link", name=SITE_01)).to_have_count(0)
    page.goto("/dashboard/subjects")
    page.get_by_label("Status").select_option("enrolled")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("link", name=SITE_02)).to_be_visible()
    expect(page.get_by_role("link", name=SITE_01)).to_have_count(0)


def test_the_sponsor_sees_no_subject_list(as_user):
    page = as_user("sponsor-1").context.new_page()
    answer = page.goto("/dashboard/subjects")
    assert answer is not None and answer.status == 403
    expect(page.locator("main")).not_to_contain_text(SITE_01)


def test_without_a_session_a_page_asks_to_log_in(subjects: RunningStack):
    answer = httpx.get(subjects.url("followup", "/dashboard/subjects"), follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fdashboard%2Fsubjects"
    # The page's query comes back after the login too (a study page as of a date, a filtered list).
    filtered = httpx.get(subjects.url("followup", "/dashboard/subjects?site=01&q=UCT"), follow_redirects=False)
    assert filtered.headers["location"] == "/login?next=%2Fdashboard%2Fsubjects%3Fsite%3D01%26q%3DUCT"
    page = subjects.url("followup", "/dashboard/subjects")
    forged = httpx.get(page, cookies={"ucart_session": "not-a-token"}, follow_redirects=False)
    assert forged.status_code == 303
    # The study's issuer of this test run is not served: the login page says so, without a 5xx.
    login = httpx.get(subjects.url("followup", "/login"), follow_redirects=False)
    assert login.status_code == 503 and "identity provider" in login.text


def test_a_page_is_readable_without_javascript(browser: Browser, subjects: RunningStack):
    session = Session(browser, subjects.url("followup", ""), "coordinator-01", javascript=False)
    page = session.context.new_page()
    page.goto("/dashboard/subjects")
    expect(page.get_by_role("cell", name=SITE_01).or_(page.get_by_role("rowheader", name=SITE_01))).to_be_visible()
    session.close()


def test_an_open_subject_page_shows_a_new_event_without_a_reload(as_user, subjects: RunningStack):
    page = as_user("coordinator-01").context.new_page()
    page.goto(f"/dashboard/subjects/{SITE_01}")
    page.evaluate("window.notReloaded = true")
    expect(page.get_by_role("row", name="Febrile neutropenia")).to_have_count(0)
    ae = {
        "term": "Febrile neutropenia",
        "category": "OTHER",
        "grade": 3,
        "serious": False,
        "relatedness": "possible",
        "expected": True,
        "aware_at": at(1, 12),
    }
    assert subjects.command("followup", f"/subjects/{SITE_01}/adverse-events", at(1), ae).status_code == 201
    # From the moment the journey has it (the projection's own latency is measured in bench/), the open
    # page shows it within 2 s, with no reload (the marker set on the window survives).
    eventually(
        lambda: any(
            a["report"]["term"] == "Febrile neutropenia"
            for a in subjects.get("followup", f"/subjects/{SITE_01}/journey").json()["adverse_events"]
        ),
        interval=0.05,
    )
    expect(page.get_by_role("row", name="Febrile neutropenia")).to_be_visible(timeout=2000)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#live-status")).to_contain_text("Updated")


@pytest.mark.parametrize("width", [1280, 800], ids=["desktop", "tablet"])
def test_axe_finds_no_serious_violation_on_any_page(as_user, width: int):
    session = as_user("test-user")
    page = session.context.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    found = {}
    pages = (
        "/dashboard/subjects",
        f"/dashboard/subjects/{SITE_01}",
        f"/dashboard/subjects/{SITE_01}/audit",
        "/dashboard/study",
        "/dashboard/worklists",
        "/dashboard/subjects/UCT-99-404",
        "/logged-out",
    )
    for path in pages:
        page.goto(path)
        found[path] = serious_violations(page)
    assert not any(found.values()), found
    # Nothing on the page is wider than the window at a tablet's width (no sideways scrolling of the page).
    page.goto(f"/dashboard/subjects/{SITE_01}")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_an_open_study_page_counts_a_new_subject_without_a_reload(as_user, subjects: RunningStack):
    page = as_user("test-user").context.new_page()
    page.goto("/dashboard/study")
    page.evaluate("window.notReloaded = true")
    counts = page.locator("[data-live] table").first
    before = counts.inner_text()
    new = "UCT-71-002"
    assert subjects.command("enrollment", f"/subjects/{new}/enrolment", at(2), enrolment(2)).status_code == 201
    eventually(lambda: subjects.get("followup", f"/subjects/{new}/journey").status_code == 200, interval=0.05)
    expect(counts).not_to_have_text(before, timeout=2000)
    assert page.evaluate("window.notReloaded") is True
