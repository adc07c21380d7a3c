"""Each subject lives on their site's calendar (the protocol's `[sites]` zones): the API's default
"today" for their study day and schedule is the site's date, and the dashboard writes times in the
site's zone. Two sites 26 hours apart (UTC+14 and UTC-12) are always on different dates, so a "today"
taken from any single clock would fail here at any hour."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import date, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from conftest import drop_database, new_database

from shared.protocol import DEFAULT_PROTOCOL_FILE
from support import ISSUER, RunningStack, eventually, treat

EAST, WEST = ZoneInfo("Pacific/Kiritimati"), ZoneInfo("Etc/GMT+12")  # UTC+14, UTC-12
AHEAD, BEHIND = "UCT-01-901", "UCT-02-901"  # infused the same (UTC) day, at sites 01 and 02


@pytest.fixture(scope="module")
def far_apart(servers, tmp_path_factory) -> RunningStack:
    """A stack whose protocol puts site 01 at UTC+14 and site 02 at UTC-12, with one treated subject at each."""
    directory = tmp_path_factory.mktemp("calendar")
    text = DEFAULT_PROTOCOL_FILE.read_text()
    text = text.replace('"Europe/Paris"', f'"{EAST.key}"').replace('"Asia/Shanghai"', f'"{WEST.key}"')
    (directory / "protocol.toml").write_text(text)
    url = new_database(servers[0])
    with RunningStack(
        url,
        servers[1],
        f"cal{uuid.uuid4().hex[:8]}.",
        directory / "logs",
        keys_dir=directory / "keys",
        protocol_file=directory / "protocol.toml",
    ) as running:
        treat(running, AHEAD, infusion_days_ago=10, site="01")
        treat(running, BEHIND, infusion_days_ago=10, site="02")
        for s in (AHEAD, BEHIND):
            eventually(lambda s=s: running.get("followup", f"/subjects/{s}/journey").json().get("infused_on"))
        yield running
    drop_database(servers[0], url)


def on_the_site_calendar(zone: ZoneInfo, read: Callable[[], date]) -> date:
    """What `read` answers, checked to be today in `zone` (as the clock stood before or after it)."""
    before = datetime.now(zone).date()
    answer = read()
    assert answer in {before, datetime.now(zone).date()}, (answer, before, zone)
    return answer


def test_a_subjects_study_day_and_schedule_count_from_today_at_their_site(far_apart: RunningStack):
    def journey(s: str) -> dict:
        return far_apart.get("followup", f"/subjects/{s}/journey").json()

    ahead = on_the_site_calendar(EAST, lambda: date.fromisoformat(journey(AHEAD)["as_of"]))
    behind = on_the_site_calendar(WEST, lambda: date.fromisoformat(journey(BEHIND)["as_of"]))
    assert (ahead - behind).days in (1, 2)  # 26 hours apart
    infused = {s: date.fromisoformat(journey(s)["infused_on"]) for s in (AHEAD, BEHIND)}
    assert infused[AHEAD] == infused[BEHIND]

    listed = {r["subject_id"]: r["study_day"] for r in far_apart.get("followup", "/subjects").json()}
    assert listed[AHEAD] == (ahead - infused[AHEAD]).days
    assert listed[BEHIND] == (behind - infused[BEHIND]).days
    for s, today in ((AHEAD, ahead), (BEHIND, behind)):
        schedule = far_apart.get("followup", f"/subjects/{s}/schedule").json()
        assert schedule == far_apart.get("followup", f"/subjects/{s}/schedule", on=today.isoformat()).json()


def dashboard(stack: RunningStack, path: str, **params: str) -> str:
    cookies = {"ucart_session": ISSUER.token("auditor-1")}
    answer = httpx.get(stack.url("followup", path), params=params, cookies=cookies, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.text


def test_the_audit_page_writes_times_in_the_sites_zone_and_reads_the_as_of_there(far_apart: RunningStack):
    events = far_apart.get("followup", f"/subjects/{AHEAD}/history").json()
    page = dashboard(far_apart, f"/dashboard/subjects/{AHEAD}/audit")
    assert "Pacific/Kiritimati" in page
    for e in events:
        local = datetime.fromisoformat(e["recorded_at"]).astimezone(EAST)
        assert f"{local:%Y-%m-%d %H:%M:%S} +14" in page
    # A moment without an offset is the site's time: just after the enrolment was recorded, at the site.
    enrolled = datetime.fromisoformat(events[0]["recorded_at"]).astimezone(EAST)
    page = dashboard(far_apart, f"/dashboard/subjects/{AHEAD}/audit", as_of=enrolled.replace(tzinfo=None).isoformat())
    assert re.search(rf"<caption>1 of {len(events)} event\(s\) recorded by", page), "the as-of was not read at the site"
