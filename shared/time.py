"""Clock access in one place. A subject's "today" is the date on their site's calendar
(`Protocol.zone`): clinical dates are the site's dates, so its study day and due visits follow it.
Aggregates across sites (the study tables) count in UTC."""

from datetime import UTC, date, datetime, tzinfo


def now_utc() -> datetime:
    return datetime.now(UTC)


def today_utc() -> date:
    return now_utc().date()


def today_in(zone: tzinfo) -> date:
    """Today's date on the calendar of `zone`."""
    return datetime.now(zone).date()
