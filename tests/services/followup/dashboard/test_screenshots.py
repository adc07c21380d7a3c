"""Screenshots of each dashboard page, taken from the demo cohort (a stack of its own, seeded through the
API). `make screenshots` runs it and keeps them in docs/img/ for the README; `make test` leaves it out
(`-m "not screenshots"`: seeding a cohort of its own costs a minute of the suite's budget, and the pages
it shows are tested by the other modules)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from playwright.sync_api import expect

from support import RunningStack, eventually, journey_caught_up
from tests.services.followup.dashboard.browser import Session, chromium

# (file, path, what must be on the page): a died subject with CRS and ICANS grade 4, a SUSAR and queries.
PAGES = [
    ("dashboard-subjects.png", "/dashboard/subjects", "UCT-02-011"),
    ("dashboard-subject.png", "/dashboard/subjects/UCT-02-011", "Swimmer lane"),
    ("dashboard-subject-persistence.png", "/dashboard/subjects/UCT-01-001", "CAR-T persistence"),
    ("dashboard-study.png", "/dashboard/study", "Kaplan-Meier"),
    ("dashboard-worklists.png", "/dashboard/worklists", "Worklists"),
    ("dashboard-audit.png", "/dashboard/subjects/UCT-02-011/audit", "UCARTInfused"),
]


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@pytest.mark.screenshots
def test_each_page_of_the_demo_cohort_is_captured(cohort_stack: RunningStack, tmp_path: Path):
    eventually(lambda: journey_caught_up(cohort_stack.database_url))
    target = Path(os.environ.get("UCART_SCREENSHOTS") or tmp_path)
    target.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        session = Session(browser, cohort_stack.url("followup", ""), "test-user")
        page = session.context.new_page()
        for name, path, shows in PAGES:
            page.goto(path)
            expect(page.get_by_text(shows).first).to_be_visible()
            page.screenshot(path=str(target / name), full_page=True)
            width, height = png_size(target / name)
            assert width == 1280 and height >= 400, (name, width, height)
        assert session.hosts <= {"127.0.0.1"}
        session.close()
