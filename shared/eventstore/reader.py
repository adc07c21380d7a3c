"""Reading a service's event store directly (asyncpg), for rebuilds and audits.

Rows are decoded with the same transcodings the services write them with, so no aggregate class is
needed: any service's store can be read from anywhere with access to its schema.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import cache

import asyncpg
from eventsourcing.persistence import JSONTranscoder

from shared.contract.envelope import Envelope, Source
from shared.eventstore.application import envelope_of, register_transcodings


@cache
def _transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    register_transcodings(transcoder)
    return transcoder


async def store_exists(conn: asyncpg.Connection, source: Source) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass($1)", f"{source}.{source}_events"))


async def read_events(conn: asyncpg.Connection, source: Source, batch: int = 500) -> AsyncIterator[Envelope]:
    """Every event of one service's store, in the order it was stored."""
    if not await store_exists(conn, source):
        return
    after = 0
    while True:
        rows = await conn.fetch(
            f"""SELECT notification_id, originator_version, state FROM {source}.{source}_events
                WHERE notification_id > $1 ORDER BY notification_id LIMIT $2""", after, batch)
        for row in rows:
            state = _transcoder().decode(bytes(row["state"]))
            yield envelope_of(state["meta"], state["payload"], source=source,
                              stream_version=row["originator_version"], recorded_at=state["timestamp"])
        if len(rows) < batch:
            return
        after = rows[-1]["notification_id"]
