"""The Study page in headless Chromium, against the running services: its numbers are the read API's
(`/study/efficacy`, `/study/safety`) for the same person at the same moment, its site boundary is the
API's, the sponsor sees aggregates and no subject, and no request leaves 127.0.0.1.

The stack is shared with other modules, so most checks compare the page with the API rather than with
fixed counts; the subjects seeded here are at a site of their own (73), whose investigator sees them
alone, so that the page can be held to exact values there too."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from services.followup.dashboard import km
from support import ISSUER, TEST_ADMIN, TEST_USER, RunningStack, at, bearer, eventually, treat
from tests.services.followup.dashboard.browser import Session, sessions

S1, S2, S3, S4 = "UCT-73-001", "UCT-73-002", "UCT-73-003", "UCT-73-004"  # S4 at site 02, the others at 73
SITE_73, SITE_02 = "investigator-73", "investigator-02"  # granted here: site staff who may see study tables
INFUSED_DAYS_AGO = 40
ENDPOINTS = ("os", "pfs", "dor")
VARIANTS = {"censored": "censored_at_subsequent_therapy", "not-censored": "not_censored_at_subsequent_therapy"}
WEEK_24 = 168


def day(n: int) -> str:
    """The time of study day n of the subjects seeded here."""
    return at(INFUSED_DAYS_AGO - n)


def _ae(stack: RunningStack, subject: str, category: str, grade: int, on: int) -> str:
    body = {
        "term": "Cytokine release syndrome" if category == "CRS" else "ICANS",
        "category": category,
        "grade": grade,
        "serious": False,
        "relatedness": "probable",
        "expected": True,
        "aware_at": day(on),
    }
    answer = stack.command_when_known("followup", f"/subjects/{subject}/adverse-events", day(on), body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["events"][0]["payload"]["ae_id"])


def _update(stack: RunningStack, subject: str, ae_id: str, on: int, **change: object) -> None:
    answer = stack.command(
        "followup", f"/subjects/{subject}/adverse-event-updates", day(on), {"ae_id": ae_id, **change}
    )
    assert answer.status_code == 201, answer.text


def _w4(stack: RunningStack, subject: str, response: str, blasts: float) -> None:
    body = {"timepoint": "W4", "response": response, "marrow_blasts_pct": blasts}
    answer = stack.command_when_known("followup", f"/subjects/{subject}/response-assessments", day(28), body)
    assert answer.status_code == 201, answer.text


def _grant(stack: RunningStack, user_id: str, site: str) -> None:
    body = {"user_id": user_id, "role": "investigator", "sites": [site], "reason": "study page tests"}
    answer = stack.post("followup", "/access/grants", body, bearer(TEST_ADMIN))
    assert answer.status_code in (201, 409), answer.text  # 409: already held (a rerun on the same stack)


@pytest.fixture(scope="module")
def seeded(stack: RunningStack) -> RunningStack:
    """Site 73: S1 CRS 1 -> 3 (day 3, a DLT) -> 1 (day 5), recovered day 7, ICANS 2 days 4-5, CR at W4, a
    transplant on day 32, still in CR on day 36; S2 CRS 2 days 2-6, NR at W4; S3 died on day 20 (not
    DLT-evaluable). Site 02: S4 with a grade 1 CRS."""
    for subject, site in ((S1, "73"), (S2, "73"), (S3, "73"), (S4, "02")):
        treat(stack, subject, infusion_days_ago=INFUSED_DAYS_AGO, site=site)
    crs = _ae(stack, S1, "CRS", 1, 1)
    _update(stack, S1, crs, 3, grade=3)
    _update(stack, S1, crs, 5, grade=1)
    _update(stack, S1, crs, 7, outcome="recovered")
    icans = _ae(stack, S1, "ICANS", 2, 4)
    _update(stack, S1, icans, 5, outcome="recovered")
    _update(stack, S2, _ae(stack, S2, "CRS", 2, 2), 6, outcome="recovered")
    _ae(stack, S4, "CRS", 1, 1)
    _w4(stack, S1, "CR", 1.0)
    _w4(stack, S2, "NR", 40.0)
    therapy = stack.command("followup", f"/subjects/{S1}/subsequent-therapies", day(32), {"therapy": "allo_hsct"})
    assert therapy.status_code == 201, therapy.text
    later = {"timepoint": "UNSCHEDULED", "response": "CR", "marrow_blasts_pct": 1.0}
    assert stack.command("followup", f"/subjects/{S1}/response-assessments", day(36), later).status_code == 201
    death = stack.command_when_known(
        "followup", f"/subjects/{S3}/death", day(20), {"primary_cause": "disease_progression"}
    )
    assert death.status_code == 201, death.text
    _grant(stack, SITE_73, "73")
    _grant(stack, SITE_02, "02")

    def journeys_complete() -> bool:
        def j(s: str) -> dict[str, Any]:
            return stack.get("followup", f"/subjects/{s}/journey").json()

        one, two, three = j(S1), j(S2), j(S3)
        return (
            len(one.get("adverse_events", ())) == 2
            and len(one["adverse_events"][0]["grade_history"]) == 3
            and len(one.get("responses", ())) == 2
            and one.get("subsequent_therapy")
            and len(two.get("responses", ())) == 1
            and two["adverse_events"][0].get("outcome") == "recovered"
            and three.get("status") == "died"
            and len(j(S4).get("adverse_events", ())) == 1
        )

    eventually(journeys_complete)
    return stack


@pytest.fixture
def as_user(browser: Browser, seeded: RunningStack) -> Iterator[Callable[..., Session]]:
    with sessions(browser, seeded.url("followup", "")) as open_as:
        yield open_as


def _ints(page: Page, selector: str) -> list[int]:
    return [int(t) for t in page.locator(selector).all_inner_texts()]


def page_numbers(page: Page) -> dict[str, Any]:
    """The numbers the page shows, read from its tables."""
    numbers: dict[str, Any] = {
        "orr": {tp: tuple(_ints(page, f'#orr tr[data-timepoint="{tp}"] td[data-n]')) for tp in ("W4", "W8", "W12")},
        "dlt": tuple(_ints(page, "#dlt td[data-n]")),
    }
    for category in ("CRS", "ICANS"):
        numbers[category] = _ints(page, f'#max-grade tr[data-category="{category}"] td[data-grade]')
    for key in ENDPOINTS:
        for variant in VARIANTS:
            numbers[f"{key}/{variant}"] = _ints(page, f'#at-risk-{key} tr[data-variant="{variant}"] td')
            steps = page.locator(f"#km-{key} .curve.{variant} path.step")
            ticks = page.locator(f"#km-{key} .curve.{variant} line.censor").count()
            numbers[f"{key}/{variant}/drawn"] = (_drops(steps.get_attribute("d") if steps.count() else ""), ticks)
    return numbers


def _drops(d: str | None) -> int:
    """How many times a step path goes straight down."""
    points = [tuple(map(float, p.split(","))) for p in re.findall(r"[-\d.]+,[-\d.]+", d or "")]
    return sum(1 for a, b in itertools.pairwise(points) if a[0] == b[0] and a[1] != b[1])


def api_numbers(stack: RunningStack, user_id: str, on: str | None = None) -> dict[str, Any]:
    """The same numbers from the read API, with the same person's bearer token."""
    params = {"on": on} if on else {}
    efficacy = stack.get("followup", "/study/efficacy", bearer(user_id), **params)
    safety = stack.get("followup", "/study/safety", bearer(user_id), **params)
    assert efficacy.status_code == safety.status_code == 200, (efficacy.text, safety.text)
    e, s = efficacy.json(), safety.json()
    numbers: dict[str, Any] = {
        "orr": {r["timepoint"]: (r["numerator"], r["denominator"]) for r in e["orr"]},
        "dlt": (s["dlt"]["subjects_with_dlt"], s["dlt"]["dlt_evaluable"]),
    }
    for category in ("CRS", "ICANS"):
        numbers[category] = [s[category.lower()]["by_grade"][str(g)] for g in range(6)]
    for key in ENDPOINTS:
        for variant, attr in VARIANTS.items():
            summary = e[key][attr]
            numbers[f"{key}/{variant}"] = [a["at_risk"] for a in summary["at_risk"]]
            table = summary["km"] or {"times": [], "events": [], "censored": []}
            shown = [i for i, t in enumerate(table["times"]) if t <= WEEK_24]
            numbers[f"{key}/{variant}/drawn"] = (
                sum(1 for i in shown if table["events"][i]),
                sum(1 for i in shown if table["censored"][i]),
            )
    return numbers


def status_by_site(page: Page) -> dict[tuple[str, str], int]:
    found = {}
    for row in page.locator("#status-site tbody tr[data-status]").all():
        status = row.get_attribute("data-status") or ""
        for cell in row.locator("td[data-site]").all():
            site = cell.get_attribute("data-site") or ""
            if site != "all" and int(cell.inner_text()):
                found[(status, site)] = int(cell.inner_text())
    return found


def api_status_by_site(stack: RunningStack, user_id: str) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for s in stack.get("followup", "/subjects", bearer(user_id)).json():
        key = (s["status"], s["site_id"] or "—")
        found[key] = found.get(key, 0) + 1
    return found


def agrees_with_api(page: Page, stack: RunningStack, user_id: str, path: str = "/dashboard/study") -> dict:
    """Load the page until it and the API agree (the projection may still be applying another module's
    events between the two reads); the numbers they agree on."""

    def same() -> dict | None:
        answer = page.goto(path)
        assert answer is not None and answer.status == 200
        on = re.search(r"on=([\d-]+)", path)
        shown, expected = page_numbers(page), api_numbers(stack, user_id, on.group(1) if on else None)
        assert shown == expected
        return shown

    return eventually(same, timeout=30)


def test_the_sponsor_sees_the_api_s_numbers_and_no_subject(as_user, seeded: RunningStack):
    page = as_user("sponsor-1").context.new_page()
    shown = agrees_with_api(page, seeded, "sponsor-1")
    assert shown["orr"]["W4"][1] >= 4 and shown["CRS"][3] >= 1  # the subjects seeded here are counted
    expect(page.get_by_role("heading", name="Study", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Study", exact=True)).to_have_attribute("aria-current", "page")
    assert re.search(r"UCT-\d", page.content()) is None, "a subject code on the sponsor's page"
    for title in ("Overall survival (OS)", "Progression-free survival (PFS)", "Duration of remission (DOR)"):
        expect(page.get_by_role("img", name=title)).to_be_visible()
    expect(page.locator("#status-site td[data-site='73']").first).to_be_visible()


def test_the_status_by_site_counts_are_the_subject_list_s(as_user, seeded: RunningStack):
    page = as_user(TEST_USER).context.new_page()
    agrees_with_api(page, seeded, TEST_USER)
    assert status_by_site(page) == api_status_by_site(seeded, TEST_USER)
    assert status_by_site(page)[("died", "73")] >= 1


def test_site_73_exactly(as_user, seeded: RunningStack):
    """The subjects seeded here, alone: each table, the curves and the heat map to the value."""
    page = as_user(SITE_73).context.new_page()
    shown = agrees_with_api(page, seeded, SITE_73)
    assert status_by_site(page) == {("follow_up", "73"): 2, ("died", "73"): 1}
    assert shown["orr"] == {"W4": (1, 3), "W8": (0, 3), "W12": (0, 3)}
    assert shown["dlt"] == (1, 2)  # S1's grade 3 CRS; S3 died in the window without a DLT
    assert shown["CRS"] == [1, 0, 1, 1, 0, 0] and shown["ICANS"] == [2, 0, 1, 0, 0, 0]
    assert shown["os/censored"][:2] == [3, 1] and shown["os/censored/drawn"] == (
        1,
        2,
    )  # S3 died; S2 censored on day 28, S1 on 32
    assert shown["dor/censored/drawn"] == (0, 1)  # S1 alone responded
    # S1 is censored at the transplant (day 32) on one curve, at the last record (day 36) on the other.
    for variant, last in (("censored", 32), ("not-censored", 36)):
        ticks = page.locator(f"#km-os .curve.{variant} line.censor").all()
        assert sorted(float(t.get_attribute("x1") or "") for t in ticks) == [km.x_of(28), km.x_of(last)], variant
    heat = {
        c: page.locator(f'#heat-map tr[data-category="{c}"] td').all_inner_texts() for c in ("CRS", "ICANS", "followed")
    }
    assert heat["CRS"][:10] == ["0", "1", "2", "3", "3", "3", "2", "1", "0", "0"]
    assert heat["ICANS"][:7] == ["0", "0", "0", "0", "2", "2", "0"]
    assert heat["followed"] == ["3"] * 21 + ["2"] * 8  # S3 died on day 20
    assert page.locator("#heat-map td.g3").count() == 3


def test_an_earlier_date_gives_the_api_s_tables_of_that_date(as_user, seeded: RunningStack):
    on = (date.fromisoformat(day(10)[:10])).isoformat()
    page = as_user(SITE_73).context.new_page()
    shown = agrees_with_api(page, seeded, SITE_73, f"/dashboard/study?on={on}")
    assert shown["orr"]["W4"] == (0, 3)  # the W4 response came on day 28
    expect(page.locator("form .scope")).to_contain_text(on)
    followed = page.locator('#heat-map tr[data-category="followed"] td').all_inner_texts()
    assert followed[:11] == ["3"] * 11 and followed[11:] == ["0"] * 18
    assert page.locator('#heat-map tr[data-category="CRS"] td.none').count() == 18


def test_a_site_02_investigator_counts_only_site_02(as_user, seeded: RunningStack):
    page = as_user(SITE_02).context.new_page()
    shown = agrees_with_api(page, seeded, SITE_02)
    assert shown != api_numbers(seeded, TEST_USER)  # not every site's
    assert {site for _, site in status_by_site(page)} == {"02"}
    assert status_by_site(page) == api_status_by_site(seeded, SITE_02)
    assert shown["CRS"][1] >= 1  # S4's grade 1 CRS
    expect(page.locator("form .scope")).to_contain_text("your sites (02)")


def test_a_coordinator_may_not_see_study_tables_here_nor_in_the_api(as_user, seeded: RunningStack):
    """The policy gives study tables to investigators, not coordinators (DOMAIN.md, "Who may do what")."""
    page = as_user("coordinator-02").context.new_page()
    answer = page.goto("/dashboard/study")
    assert answer is not None and answer.status == 403
    assert seeded.get("followup", "/study/safety", bearer("coordinator-02")).status_code == 403
    expect(page.locator("main")).not_to_contain_text("Kaplan")


def test_without_a_session_the_page_asks_to_log_in_and_a_bad_date_is_a_page_not_a_crash(seeded, as_user):
    answer = httpx.get(seeded.url("followup", "/dashboard/study"), follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fdashboard%2Fstudy"
    page = as_user("sponsor-1").context.new_page()
    bad = page.goto("/dashboard/study?on=2026-02-30")
    assert bad is not None and bad.status == 422
    expect(page.get_by_role("heading", level=1)).to_have_text("Invalid date")


def test_readable_without_javascript_at_tablet_width_and_by_keyboard(browser: Browser, seeded: RunningStack, as_user):
    session = Session(browser, seeded.url("followup", ""), SITE_73, javascript=False, width=800, height=1000)
    page = session.context.new_page()
    page.goto("/dashboard/study")
    expect(page.get_by_role("row", name=re.compile("^W4 1 3"))).to_be_visible()
    expect(page.get_by_role("img", name="Overall survival (OS)")).to_be_visible()
    session.close()

    page = as_user(SITE_73).context.new_page()
    page.set_viewport_size({"width": 800, "height": 1000})
    page.goto("/dashboard/study")
    assert page.evaluate("document.documentElement.scrollWidth") <= 800  # tables scroll in their own region
    focused = []
    for _ in range(20):
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert "on" in focused and "Survival" in focused, focused
    page.get_by_role("link", name="CRS and ICANS by day").press("Enter")
    expect(page).to_have_url(re.compile("#heat$"))


def test_no_asset_from_elsewhere(seeded: RunningStack):
    html = httpx.get(seeded.url("followup", "/dashboard/study"), cookies={"ucart_session": ISSUER.token(SITE_73)}).text
    assert re.findall(r'(?:href|src)="(?!/|#)', html) == []
    css = httpx.get(seeded.url("followup", "/dashboard/static/study.css"))
    assert css.status_code == 200 and "url(" not in css.text
