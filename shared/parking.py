"""Parked events: what a consumer could never apply, kept with the reason until an operator acts.

A parked event that its source's event store holds (`in_store`) is a hole its consumer steps over,
so the subject's later events still apply. A message that no store holds (unreadable, unsigned or
forged, or not what the store says) is only recorded. Rows live in `<schema>.parked_events` (see
`shared.db`); `ucart parked list | retry | dismiss` work on them, and `/ready` reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

REASON_LIMIT = 2000


def clean(text: str, limit: int = REASON_LIMIT) -> str:
    """Text PostgreSQL can store (no NUL) and a reader can read, whatever the message held."""
    return text.replace("\x00", "\\x00")[:limit]


@dataclass(frozen=True)
class Parcel:
    """One event or message to park, with what identifies it and where it came from."""

    body: bytes
    reason: str
    in_store: bool = False
    source: str | None = None
    stream_id: UUID | None = None
    stream_version: int | None = None
    subject_id: str | None = None
    event_id: UUID | None = None
    event_type: str | None = None
    topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None
    notification_id: int | None = None
    key_id: str | None = None  # a Kafka message's signature headers, as they came
    signature: str | None = None


@dataclass(frozen=True)
class Parked(Parcel):
    id: int = 0
    consumer: str = ""
    parked_at: datetime | None = None
    retried_at: datetime | None = None

    @property
    def label(self) -> str:
        unread = "unverified message" if self.reason.startswith("signature") else "unreadable"
        return f"{self.event_type or unread} v{self.stream_version or '?'}"

    @property
    def where(self) -> str:
        if self.topic is not None:
            return f"{self.topic}[{self.kafka_partition}]@{self.kafka_offset}"
        return f"{self.source} store, notification {self.notification_id}"


_PARCEL = [f.name for f in fields(Parcel)]


async def park(conn: asyncpg.Connection | asyncpg.Pool, schema: str, consumer: str, parcel: Parcel) -> int | None:
    """Record the parcel; None when that stored event was parked already (its row then takes the new
    reason: a retry that failed again)."""
    values = {name: getattr(parcel, name) for name in _PARCEL}
    values["reason"] = clean(parcel.reason)
    for name in ("event_type", "key_id", "signature"):  # what a sender chose, perhaps anything
        if values[name] is not None:
            values[name] = clean(values[name], 200)
    columns = ", ".join(values)
    placeholders = ", ".join(f"${i}" for i in range(2, len(values) + 2))
    parked: int | None = await conn.fetchval(
        f"""INSERT INTO {schema}.parked_events (consumer, {columns}) VALUES ($1, {placeholders})
            ON CONFLICT (consumer, source, stream_id, stream_version) WHERE in_store AND resolved_at IS NULL
            DO UPDATE SET reason = EXCLUDED.reason, retried_at = now()
            RETURNING CASE WHEN xmax = 0 THEN id END""",
        consumer,
        *values.values(),
    )
    return parked


async def holes(
    conn: asyncpg.Connection, schema: str, consumer: str, source: str, stream_id: UUID, after: int, until: int
) -> set[int]:
    """Versions after `after`, up to and including `until`, of one stream that are parked for good."""
    rows = await conn.fetch(
        f"""SELECT stream_version FROM {schema}.parked_events
            WHERE consumer = $1 AND source = $2 AND stream_id = $3 AND stream_version > $4
              AND stream_version <= $5 AND in_store AND resolved_at IS NULL""",
        consumer,
        source,
        stream_id,
        after,
        until,
    )
    return {r["stream_version"] for r in rows}


async def any_holes(conn: asyncpg.Connection, schema: str, consumer: str, streams: Sequence[tuple[str, UUID]]) -> bool:
    """Whether any of these (source, stream id) streams has an event parked for good (a batch then goes
    one event at a time, stepping over it)."""
    found: bool = await conn.fetchval(
        f"""SELECT EXISTS (SELECT 1 FROM {schema}.parked_events
            WHERE consumer = $1 AND in_store AND resolved_at IS NULL
              AND source = ANY($2::text[]) AND stream_id = ANY($3::uuid[]))""",
        consumer,
        sorted({source for source, _ in streams}),
        [stream_id for _, stream_id in streams],
    )
    return found


async def unresolved(
    conn: asyncpg.Connection | asyncpg.Pool, schema: str, *, consumer: str | None = None, ids: list[int] | None = None
) -> list[Parked]:
    rows = await conn.fetch(
        f"""SELECT id, consumer, parked_at, retried_at, {", ".join(_PARCEL)} FROM {schema}.parked_events
            WHERE resolved_at IS NULL AND ($1::text IS NULL OR consumer = $1)
              AND ($2::bigint[] IS NULL OR id = ANY($2)) ORDER BY id""",
        consumer,
        ids,
    )
    return [_parked(dict(row)) for row in rows]


def _parked(values: dict[str, Any]) -> Parked:
    return Parked(**{**values, "body": bytes(values["body"])})


async def counts(conn: asyncpg.Connection | asyncpg.Pool, schema: str) -> dict[str, int]:
    """Unresolved parked events per consumer."""
    rows = await conn.fetch(f"""SELECT consumer, count(*) AS n FROM {schema}.parked_events
                                WHERE resolved_at IS NULL GROUP BY consumer ORDER BY consumer""")
    return {r["consumer"]: r["n"] for r in rows}


async def resolve(conn: asyncpg.Connection | asyncpg.Pool, schema: str, parked_id: int, resolution: str) -> None:
    await conn.execute(
        f"""UPDATE {schema}.parked_events SET resolved_at = now(), retried_at = now(),
                                  resolution = $2 WHERE id = $1""",
        parked_id,
        clean(resolution, 500),
    )


async def resolve_hole(
    conn: asyncpg.Connection, schema: str, consumer: str, source: str, stream_id: UUID, version: int, resolution: str
) -> None:
    await conn.execute(
        f"""UPDATE {schema}.parked_events SET resolved_at = now(), retried_at = now(), resolution = $5
                           WHERE consumer = $1 AND source = $2 AND stream_id = $3 AND stream_version = $4
                             AND in_store AND resolved_at IS NULL""",
        consumer,
        source,
        stream_id,
        version,
        clean(resolution, 500),
    )


async def still_failing(conn: asyncpg.Connection | asyncpg.Pool, schema: str, parked_id: int, reason: str) -> None:
    await conn.execute(
        f"UPDATE {schema}.parked_events SET retried_at = now(), reason = $2 WHERE id = $1", parked_id, clean(reason)
    )


async def forget_holes(conn: asyncpg.Connection, schema: str, consumer: str) -> None:
    """Before a rebuild: the stored events it meets are tried again (and parked again if they still fail).
    What no store holds stays recorded."""
    await conn.execute(
        f"DELETE FROM {schema}.parked_events WHERE consumer = $1 AND in_store AND resolved_at IS NULL", consumer
    )
