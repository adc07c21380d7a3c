"""The Worklists page in headless Chromium, against the running services: the same visits, queries and
report clocks as the read API gives the same person; a data query answered by the site's coordinator
and closed by a data manager from the page; the forms only where the policy allows them; and the POSTs
refused without the session's form token, for a role that may not, or with bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from support import RunningStack, at, bearer, eventually, treat
from tests.services.followup.dashboard.browser import Session, sessions

LISTED, ANSWERED, OTHER_SITE, TWICE, GONE = "UCT-74-001", "UCT-74-003", "UCT-74-002", "UCT-74-004", "UCT-74-005"
RED = "rgb(164, 22, 26)"  # the stylesheet's --alert
CRS_G2_BY_INVESTIGATOR = {  # the findings say grade 3 (8 L/min of oxygen): the rules open a data query
    "term": "Cytokine release syndrome",
    "category": "CRS",
    "grade": 2,
    "serious": True,
    "seriousness_criteria": ["hospitalisation"],
    "relatedness": "probable",
    "expected": True,
    "crs": {"max_temperature_c": 39.0, "oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 8.0},
}


def api(stack: RunningStack, user: str, path: str, **params) -> list[dict]:
    answer = stack.client.get(stack.url("followup", path), params=params, headers=bearer(user))
    assert answer.status_code == 200, answer.text
    return answer.json()


def query_of(stack: RunningStack, subject: str) -> dict:
    [query] = api(stack, "test-user", f"/subjects/{subject}/journey")["queries"]
    return query


def history(stack: RunningStack, subject: str) -> list[dict]:
    return api(stack, "test-user", f"/subjects/{subject}/history")


@pytest.fixture(scope="module")
def seeded(stack: RunningStack) -> RunningStack:
    """Two treated subjects at site 01 with an overdue visit, a serious CRS whose grade the findings
    dispute (an open data query, an overdue 24 h sponsor clock), and one at site 02."""
    for subject, site in ((LISTED, "01"), (ANSWERED, "01"), (OTHER_SITE, "02"), (TWICE, "01"), (GONE, "01")):
        treat(stack, subject, infusion_days_ago=12, site=site)
    # GONE died on day 10, having missed D7 (days 6-8).
    death = {"primary_cause": "disease_progression"}
    died = stack.command_when_known("followup", f"/subjects/{GONE}/death", at(2), death)
    assert died.status_code == 201, died.text
    for subject in (LISTED, ANSWERED, TWICE):
        ae = {**CRS_G2_BY_INVESTIGATOR, "aware_at": at(5, 12)}
        reported = stack.command_when_known("followup", f"/subjects/{subject}/adverse-events", at(5), ae)
        assert reported.status_code == 201, reported.text
        assert [e["event_type"] for e in reported.json()["events"]] == ["AEReported", "DataQueryOpened"]
    for subject in (LISTED, ANSWERED, TWICE):
        eventually(lambda s=subject: len(api(stack, "test-user", f"/subjects/{s}/journey")["queries"]) == 1)
    eventually(lambda: api(stack, "test-user", f"/subjects/{OTHER_SITE}/journey")["infused_on"] is not None)
    return stack


@pytest.fixture
def as_user(browser: Browser, seeded: RunningStack) -> Iterator[Callable[[str | None], Session]]:
    with sessions(browser, seeded.url("followup", "")) as open_as:
        yield open_as


def rows(page: Page, table: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in row.locator("th, td").all_inner_texts()]
        for row in page.locator(f"table#{table} tbody tr").all()
        if row.locator("td").count() > 1
    ]


def open_query_ids(page: Page) -> set[str]:
    return set(page.locator("table#queries tbody tr.query-open").evaluate_all("rs => rs.map(r => r.dataset.queryId)"))


def worklist(page: Page, **params: str) -> Page:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    answer = page.goto(f"/dashboard/worklists{'?' + query if query else ''}")
    assert answer is not None and answer.status == 200
    return page


def test_the_worklist_lists_what_the_api_lists_for_the_same_person(as_user, seeded: RunningStack):
    page = as_user("coordinator-01").context.new_page()
    worklist(page)
    expect(page.get_by_role("link", name="Worklists")).to_have_attribute("aria-current", "page")

    def same_visits() -> bool:
        listed = api(seeded, "coordinator-01", "/followups", status=["due", "overdue"])
        expected = {(v["subject_id"], v["code"], v["status"]) for v in listed}
        worklist(page)
        shown = {(r[0], r[2], r[5]) for r in rows(page, "visits") + rows(page, "contacts") + rows(page, "missed")}
        assert shown == expected, shown ^ expected
        return True

    eventually(same_visits)
    overdue = {
        v["code"] for v in api(seeded, "coordinator-01", "/followups", status="overdue") if v["subject_id"] == LISTED
    }
    assert overdue, "the seeded subject has an overdue visit"
    shown = rows(page, "visits") + rows(page, "contacts")
    assert overdue <= {r[2] for r in shown if r[0] == LISTED and r[5] == "overdue"}
    # Overdue first, and in red; no subject of site 02 for a site-01 coordinator.
    statuses = [r[5] for r in rows(page, "visits")]
    assert statuses == sorted(statuses, key=lambda s: s != "overdue") and "overdue" in statuses
    first = page.locator("table#visits tbody tr.visit-overdue td").first
    assert first.evaluate("e => getComputedStyle(e).color") == RED
    assert OTHER_SITE not in page.locator("main").inner_text()

    def same_queries() -> bool:
        expected = {q["query_id"] for q in api(seeded, "coordinator-01", "/queries", status="open")}
        worklist(page)
        shown = set(
            page.locator("table#queries tbody tr.query-open").evaluate_all("rs => rs.map(r => r.dataset.queryId)")
        )
        assert shown == expected, shown ^ expected
        return True

    eventually(same_queries)
    assert query_of(seeded, LISTED)["query_id"] in open_query_ids(page)

    # The 24 h sponsor clock of the serious CRS: overdue, in red, due time at the site (site 01: Paris),
    # its zone named, with its study day there.
    [clock] = [r for r in api(seeded, "coordinator-01", "/safety-reports") if r["subject_id"] == LISTED]
    due = datetime.fromisoformat(clock["due_at"]).astimezone(ZoneInfo("Europe/Paris"))
    infused = datetime.fromisoformat(api(seeded, "coordinator-01", f"/subjects/{LISTED}/journey")["infused_on"])
    [shown_clock] = [r for r in rows(page, "reports") if r[0] == LISTED]
    assert shown_clock == [
        LISTED,
        "01",
        "sae to sponsor",
        "Cytokine release syndrome",
        due.strftime("%Y-%m-%d %H:%M ") + str(due.tzname()),
        str((due.date() - infused.date()).days),
        "overdue",
    ]
    cell = page.locator("table#reports tbody tr.report-overdue", has_text=LISTED).locator("td").last
    assert cell.evaluate("e => getComputedStyle(e).color") == RED


def test_visits_missed_by_a_subject_now_off_study_are_deviations_not_to_dos(as_user, seeded: RunningStack):
    eventually(lambda: api(seeded, "test-user", f"/subjects/{GONE}/journey")["status"] == "died")
    page = as_user("coordinator-01").context.new_page()
    worklist(page)
    assert (GONE, "D7", "overdue") in {(r[0], r[2], r[5]) for r in rows(page, "missed")}
    assert GONE not in {r[0] for r in rows(page, "visits")}
    assert LISTED not in {r[0] for r in rows(page, "missed")}  # on study: its overdue visits are to-dos


def test_the_site_filter(as_user):
    page = as_user("test-user").context.new_page()
    worklist(page)
    expect(page.locator("table#visits")).to_contain_text(OTHER_SITE)
    page.get_by_label("Site").select_option("01")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url("/dashboard/worklists?site=01")
    expect(page.locator("table#visits")).to_contain_text(LISTED)
    expect(page.locator("main")).not_to_contain_text(OTHER_SITE)


def test_a_coordinator_answers_and_a_data_manager_closes_a_query_from_the_page(as_user, seeded: RunningStack):
    query_id = query_of(seeded, ANSWERED)["query_id"]
    coordinator = as_user("coordinator-01").context.new_page()
    worklist(coordinator)
    row = coordinator.locator(f'table#queries tr[data-query-id="{query_id}"]')
    expect(row.get_by_role("button", name="Close query")).to_have_count(0)
    answer = row.get_by_label(f"Answer for {ANSWERED} (grade)")
    # By keyboard alone: type the answer, Tab to the button, Enter.
    answer.focus()
    coordinator.keyboard.type("Oxygen was 8 L/min by nasal cannula: grade 3 is right, a correction follows.")
    coordinator.keyboard.press("Tab")
    expect(row.get_by_role("button", name="Send answer")).to_be_focused()
    coordinator.keyboard.press("Enter")
    expect(coordinator).to_have_url(f"/dashboard/worklists?done={ANSWERED}%3Aanswer")
    expect(coordinator.get_by_role("status")).to_have_text(f"Your answer to the data query on {ANSWERED} is recorded.")
    eventually(lambda: query_of(seeded, ANSWERED)["status"] == "answered")
    assert query_of(seeded, ANSWERED)["answer"].startswith("Oxygen was 8 L/min")
    answered = history(seeded, ANSWERED)[-1]
    assert answered["event_type"] == "DataQueryAnswered"
    assert answered["recorded_by"] == {"user_id": "coordinator-01", "role": "coordinator", "site_id": "01"}

    # The coordinator sees no close form; a forged closure, with a good form token, is refused and stores nothing.
    worklist(coordinator)
    row = coordinator.locator(f'table#queries tr[data-query-id="{query_id}"]')
    expect(row).to_contain_text("awaiting closure")
    expect(row.get_by_role("button", name="Close query")).to_have_count(0)
    token = _token_of(as_user("coordinator-01"))  # from the answer form of the other query
    before = len(history(seeded, ANSWERED))
    forged = coordinator.request.post(
        f"/dashboard/subjects/{ANSWERED}/queries/{query_id}/close",
        form={"csrf": token, "resolution": "Closed by the site."},
        max_redirects=0,
    )
    assert forged.status == 403 and "Not allowed for your role" in forged.text()
    assert len(history(seeded, ANSWERED)) == before and query_of(seeded, ANSWERED)["status"] == "answered"

    manager = as_user("test-user").context.new_page()
    worklist(manager)
    row = manager.locator(f'table#queries tr[data-query-id="{query_id}"]')
    row.get_by_label(f"Resolution for {ANSWERED} (grade)").fill("Answer accepted; the grade will be corrected.")
    row.get_by_role("button", name="Close query").click()
    expect(manager.get_by_role("status")).to_have_text(f"The data query on {ANSWERED} is closed.")
    eventually(lambda: query_of(seeded, ANSWERED)["status"] == "closed")
    closed = history(seeded, ANSWERED)[-1]
    assert closed["event_type"] == "DataQueryClosed"
    assert closed["payload"]["resolution"] == "Answer accepted; the grade will be corrected."
    assert (closed["recorded_by"]["user_id"], closed["recorded_by"]["role"]) == ("test-user", "data_manager")
    worklist(manager)
    expect(manager.locator(f'table#queries tr[data-query-id="{query_id}"]')).to_have_count(0)


def _token_of(session: Session) -> str:
    """The form token the page gives this session (a coordinator's page shows one with its answer forms)."""
    page = session.context.new_page()
    worklist(page)
    token = page.locator("input[name=csrf]").first.get_attribute("value")
    assert token
    return token


def test_a_post_without_the_form_token_or_with_bad_input_stores_nothing(as_user, seeded: RunningStack):
    query_id = query_of(seeded, LISTED)["query_id"]
    path = f"/dashboard/subjects/{LISTED}/queries/{query_id}/answer"
    session = as_user("coordinator-01")
    page = session.context.new_page()
    worklist(page)
    before = len(history(seeded, LISTED))
    for form in ({"answer": "An answer"}, {"answer": "An answer", "csrf": "0" * 64}):
        refused = page.request.post(path, form=form, max_redirects=0)
        assert refused.status == 403 and "Form refused" in refused.text()
    # Another person's token is no better.
    other = _token_of(as_user("test-user"))
    assert page.request.post(path, form={"answer": "An answer", "csrf": other}, max_redirects=0).status == 403
    # Bad input: a 422 page that says what to fix.
    token = _token_of(session)
    once = page.locator("input[name=once]").first.get_attribute("value") or ""
    bad = page.request.post(path, form={"answer": "x", "csrf": token, "once": once}, max_redirects=0)
    assert bad.status == 422 and "Check the form" in bad.text() and "at least 2 characters" in bad.text()
    keyless = page.request.post(path, form={"answer": "An answer", "csrf": token}, max_redirects=0)
    assert keyless.status == 422 and "one-time key" in keyless.text()
    # A cross-site form carries no session cookie (SameSite=Lax): it is sent to log in.
    anonymous = httpx.post(seeded.url("followup", path), data={"answer": "An answer"}, follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")
    assert len(history(seeded, LISTED)) == before and query_of(seeded, LISTED)["status"] == "open"


def test_the_worklist_works_at_800_px_and_without_javascript(browser: Browser, seeded: RunningStack):
    session = Session(browser, seeded.url("followup", ""), "coordinator-01", javascript=False, width=800)
    page = session.context.new_page()
    worklist(page)
    expect(page.locator("table#queries")).to_contain_text(LISTED)
    answer = page.get_by_label(f"Answer for {LISTED} (grade)")
    expect(answer).to_be_visible()
    box = answer.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 800, box  # the form fits the narrow window
    session.close()


def test_the_sponsor_has_no_worklist(as_user):
    page = as_user("sponsor-1").context.new_page()
    answer = page.goto("/dashboard/worklists")
    assert answer is not None and answer.status == 403
    expect(page.locator("main")).not_to_contain_text(LISTED)


def test_a_form_sent_twice_records_one_answer(as_user, seeded: RunningStack):
    """A double click, or a resend after a lost answer, carries the form's one-time key: the second is
    answered as the first was and records nothing new; the same key for other words is refused."""
    query_id = query_of(seeded, TWICE)["query_id"]
    page = as_user("coordinator-01").context.new_page()
    worklist(page)
    form = page.locator(f'table#queries tr[data-query-id="{query_id}"] form')
    fields = {name: form.locator(f"input[name={name}]").get_attribute("value") or "" for name in ("csrf", "once")}
    path = f"/dashboard/subjects/{TWICE}/queries/{query_id}/answer"
    before = len(history(seeded, TWICE))
    for _ in range(2):
        sent = page.request.post(path, form={**fields, "answer": "Checked: 8 L/min."}, max_redirects=0)
        assert sent.status == 303 and sent.headers["location"] == f"/dashboard/worklists?done={TWICE}%3Aanswer"
    other = page.request.post(path, form={**fields, "answer": "Other words."}, max_redirects=0)
    assert other.status == 422 and "already used for a different request" in other.text()
    eventually(lambda: query_of(seeded, TWICE)["status"] == "answered")
    added = history(seeded, TWICE)[before:]
    assert [e["event_type"] for e in added] == ["DataQueryAnswered"]
    assert added[0]["payload"]["answer"] == "Checked: 8 L/min."
