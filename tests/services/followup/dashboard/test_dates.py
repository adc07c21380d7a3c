"""How the dashboard writes dates and times: moments in the site's zone, named; dates with study days."""

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from services.followup.dashboard.dates import moment, on_day, zone_label

PARIS, SHANGHAI = ZoneInfo("Europe/Paris"), ZoneInfo("Asia/Shanghai")
INSTANT = datetime(2026, 1, 15, 20, 30, 15, tzinfo=UTC)


def test_a_moment_is_written_in_the_sites_zone_and_names_it():
    assert moment(INSTANT, PARIS) == '<time datetime="2026-01-15T20:30:15+00:00">2026-01-15 21:30 CET</time>'
    # 04:30 the next day in Shanghai: the date too is the site's.
    assert moment(INSTANT, SHANGHAI) == '<time datetime="2026-01-15T20:30:15+00:00">2026-01-16 04:30 CST</time>'
    assert "2026-01-15 20:30:15 UTC" in moment(INSTANT, UTC, seconds=True)


def test_summer_time_is_the_sites_own():
    assert "2026-07-15 22:30 CEST" in moment(INSTANT.replace(month=7), PARIS)


def test_a_moment_given_with_another_offset_is_the_same_instant():
    given = datetime.fromisoformat("2026-01-16T04:30:15+08:00")
    assert moment(given, PARIS) == moment(INSTANT, PARIS)


def test_a_date_carries_its_study_day_once_infused():
    infused = date(2026, 1, 10)
    assert on_day(date(2026, 1, 24), infused).endswith('<span class="day">(day 14)</span>')
    assert "(day -5)" in on_day(date(2026, 1, 5), infused)  # lymphodepletion falls on negative days
    assert on_day(date(2026, 1, 5), None) == '<time datetime="2026-01-05">2026-01-05</time>'
    assert on_day(None, infused) == moment(None, PARIS) == "—"


def test_a_zone_is_labelled_by_its_iana_name():
    assert zone_label(PARIS) == "Europe/Paris" and zone_label(UTC) == "UTC"
