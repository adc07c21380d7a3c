"""Schedule edges on the calendar: month ends, leap years, and the time zone of occurred_at."""

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from services.followup.projections.journey import Journey, apply
from services.followup.projections.schedule import schedule
from shared.contract.envelope import Envelope
from shared.contract.events import Payload, UCARTInfused
from shared.protocol import load_protocol
from tests.services.followup.envelopes import envelope as recorded

PROTOCOL = load_protocol()
INFUSION = UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="L1", donor_id="D1")


def infused_at(at: datetime) -> Journey:
    return apply(Journey(subject_id="UCT-01-900"), envelope(INFUSION, at), INFUSION)


def envelope(payload: Payload, at: datetime) -> Envelope:
    return recorded(payload, at, subject_id="UCT-01-900")


def targets(journey: Journey, today: date) -> dict[str, date]:
    return {v.code: v.target_date for v in schedule(journey, PROTOCOL, today)}


@pytest.mark.parametrize(
    ("day0", "d28"),
    [
        (date(2027, 1, 31), date(2027, 2, 28)),  # across a short February
        (date(2028, 1, 31), date(2028, 2, 28)),  # leap year: 28 days later is still 28 February
        (date(2028, 2, 1), date(2028, 2, 29)),  # ... and lands on 29 February from 1 February
        (date(2026, 12, 20), date(2027, 1, 17)),  # across the year end
    ],
)
def test_visit_dates_count_days_across_month_and_year_ends(day0, d28):
    journey = infused_at(datetime(day0.year, day0.month, day0.day, 10, tzinfo=UTC))
    planned = targets(journey, day0)
    assert planned["D28"] == d28
    assert all(
        planned[v.code] == day0 + timedelta(days=v.target_day) for v in PROTOCOL.followup.visits if v.kind != "ltfu"
    )


def test_day_0_is_the_local_date_of_the_infusion_not_the_utc_date():
    # 23:30 in New York on 1 March is already 2 March in UTC: the site's day 0 is 1 March.
    late_evening = datetime(2027, 3, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    journey = infused_at(late_evening)
    assert journey.infused_on == date(2027, 3, 1)
    assert targets(journey, date(2027, 3, 2))["D7"] == date(2027, 3, 8)
    # Early morning in Shanghai on 2 March is still 1 March in UTC: day 0 is 2 March.
    early_morning = datetime(2027, 3, 2, 6, 0, tzinfo=timezone(timedelta(hours=8)))
    assert infused_at(early_morning).infused_on == date(2027, 3, 2)


def test_window_edges_on_a_month_end():
    journey = infused_at(datetime(2027, 1, 31, 9, tzinfo=UTC))
    d28 = next(v for v in PROTOCOL.followup.visits if v.code == "D28")
    window_end = date(2027, 2, 28) + timedelta(days=d28.window_after)  # 3 March 2027
    status_on = {
        today: {v.code: v.status for v in schedule(journey, PROTOCOL, today)}["D28"]
        for today in (window_end, window_end + timedelta(days=1))
    }
    assert status_on == {date(2027, 3, 3): "due", date(2027, 3, 4): "overdue"}
