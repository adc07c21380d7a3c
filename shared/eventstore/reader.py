"""Reading a service's event store directly (asyncpg), for rebuilds and audits.

Rows are decoded with the mapper the services write them with (`store_mapper`: the same transcodings,
cipher and compressor), so any service's store can be read from anywhere with access to its schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from uuid import UUID

import asyncpg
from eventsourcing.persistence import Mapper

from shared.contract.envelope import Envelope
from shared.contract.events import Payload
from shared.contract.topics import Source
from shared.eventstore.aggregate import subject_uuid
from shared.eventstore.application import store_env, store_mapper
from shared.eventstore.decoding import decode


@cache
def _mapper(source: Source) -> Mapper[UUID]:
    return store_mapper(store_env(source))


async def store_exists(conn: asyncpg.Connection, source: Source) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1)", f"{source}.{source}_events"))


@dataclass(frozen=True)
class StoredRow:
    """One row of an event store, not yet decoded: a row that cannot be decoded is still a row."""

    source: Source
    notification_id: int
    stream_id: UUID
    version: int
    topic: str
    state: bytes

    def decoded(self) -> tuple[Envelope, Payload]:
        """The row's envelope and its payload upcast to the latest version (raises when the row cannot be
        read: the caller decides what to do with it)."""
        return decode(_mapper(self.source), self.source, self.version, self.state)

    def envelope(self) -> Envelope:
        return self.decoded()[0]


_ROW = "notification_id, originator_id, originator_version, topic, state"


def _row(source: Source, record: asyncpg.Record) -> StoredRow:
    return StoredRow(
        source,
        record["notification_id"],
        record["originator_id"],
        record["originator_version"],
        record["topic"],
        bytes(record["state"]),
    )


async def rows_after(conn: asyncpg.Connection, source: Source, after: int, limit: int) -> list[StoredRow]:
    """Up to `limit` rows stored after notification id `after`, undecoded."""
    if not await store_exists(conn, source):
        return []
    records = await conn.fetch(
        f"""SELECT {_ROW} FROM {source}.{source}_events
                                   WHERE notification_id > $1 ORDER BY notification_id LIMIT $2""",
        after,
        limit,
    )
    return [_row(source, r) for r in records]


async def stream_rows(
    conn: asyncpg.Connection, source: Source, stream_id: UUID, after_version: int, before_version: int | None = None
) -> list[StoredRow]:
    """One stream's rows after a version (and before another, if given), undecoded."""
    if not await store_exists(conn, source):
        return []
    records = await conn.fetch(
        f"""SELECT {_ROW} FROM {source}.{source}_events
            WHERE originator_id = $1 AND originator_version > $2 AND originator_version < $3
            ORDER BY originator_version""",
        stream_id,
        after_version,
        before_version or 2**31 - 1,
    )
    return [_row(source, r) for r in records]


async def read_events(conn: asyncpg.Connection, source: Source, batch: int = 500) -> AsyncIterator[Envelope]:
    """Every event of one service's store, in the order it was stored."""
    after = 0
    while rows := await rows_after(conn, source, after, batch):
        for row in rows:
            yield row.envelope()
        after = rows[-1].notification_id


async def read_stream(
    conn: asyncpg.Connection, source: Source, subject_id: str, after_version: int, before_version: int | None = None
) -> list[Envelope]:
    """One subject's events in one service's store, after a version (and before another, if given)."""
    return [
        row.envelope()
        for row in await stream_rows(conn, source, subject_uuid(subject_id), after_version, before_version)
    ]
