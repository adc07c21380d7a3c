"""How the dashboard writes dates and times: a moment in the subject's site's time zone, its zone named
so that a reader elsewhere is not misled; a clinical date (already a date on the site's calendar) with
its study day beside it. Both are Jinja filters (`render`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, tzinfo

from markupsafe import Markup


def moment(value: datetime | None, zone: tzinfo, seconds: bool = False) -> Markup:
    """`2026-03-02 10:30 CET`, in a <time> whose machine-readable value is the UTC instant."""
    if value is None:
        return Markup("—")
    local = value.astimezone(zone)
    shown = local.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
    return Markup('<time datetime="{}">{} {}</time>').format(value.astimezone(UTC).isoformat(), shown, local.tzname())


def on_day(value: date | None, day0: date | None) -> Markup:
    """`2026-03-02 (day 14)`: the date, and its study day once the subject has been infused."""
    if value is None:
        return Markup("—")
    if day0 is None:
        return Markup('<time datetime="{0}">{0}</time>').format(value.isoformat())
    return Markup('<time datetime="{0}">{0}</time> <span class="day">(day {1})</span>').format(
        value.isoformat(), (value - day0).days
    )


def zone_label(zone: tzinfo) -> str:
    """The zone's IANA name where it has one (`Europe/Paris`), else its abbreviation (`UTC`)."""
    return str(getattr(zone, "key", None) or zone.tzname(None) or "UTC")
