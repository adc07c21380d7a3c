"""A subject's full history across the three event stores, and what was known or true at a time.

- history: every event of the subject, in the order it was recorded, with who, when (clinical and
  system time), why, correlation and causation, schema version.
- as of a moment (system time): the journey folded from the events recorded by then.
- effective on a date (clinical time): the journey folded from every event as we know them now, read as
  of that date (the journey keeps each fact's date, so what happened later does not show, and a
  correction that moved a fact across the date is taken as corrected).
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import asyncpg

from services.followup.projections import journey as journeys
from shared.contract.envelope import Envelope
from shared.contract.topics import SOURCES
from shared.contract.upcasting import latest_payload
from shared.eventstore.reader import read_stream

CSV_COLUMNS = [
    "recorded_at",
    "occurred_at",
    "source",
    "stream_version",
    "event_type",
    "schema_version",
    "event_id",
    "user_id",
    "role",
    "reason",
    "correlation_id",
    "causation_id",
    "protocol_version",
    "payload",
]


async def subject_history(conn: asyncpg.Connection, subject_id: str) -> list[Envelope]:
    events = [e for source in SOURCES for e in await read_stream(conn, source, subject_id, 0)]
    return sorted(events, key=lambda e: (e.recorded_at, SOURCES.index(e.source), e.stream_version))


def fold(subject_id: str, events: list[Envelope]) -> journeys.Journey:
    journey = journeys.Journey(subject_id=subject_id)
    for envelope in events:
        journey = journeys.apply(journey, envelope, latest_payload(envelope))
    return journey


def recorded_by(events: list[Envelope], as_of: datetime | None) -> list[Envelope]:
    """The events recorded by `as_of` (system time); all of them without it."""
    return [e for e in events if as_of is None or e.recorded_at <= as_of]


def as_jsonl(events: list[Envelope]) -> str:
    return "".join(e.model_dump_json() + "\n" for e in events)


def as_csv(events: list[Envelope]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for e in events:
        writer.writerow(
            {
                "recorded_at": e.recorded_at.isoformat(),
                "occurred_at": e.occurred_at.isoformat(),
                "source": e.source,
                "stream_version": e.stream_version,
                "event_type": e.event_type,
                "schema_version": e.schema_version,
                "event_id": e.event_id,
                "user_id": e.recorded_by.user_id,
                "role": e.recorded_by.role,
                "reason": e.reason or "",
                "correlation_id": e.correlation_id,
                "causation_id": e.causation_id or "",
                "protocol_version": e.protocol_version,
                "payload": json.dumps(e.payload, sort_keys=True),
            }
        )
    return out.getvalue()
