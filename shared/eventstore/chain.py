"""Tamper evidence: a hash chain over every subject's stream (21 CFR 11.10(e), ALCOA+).

Each stored event gets, in the same transaction as its insert, a row in `<name>_events_chain` with
sha256(previous hash | stream id | version | topic | stored bytes). `verify_store` walks every
stream and names the first event whose row was changed, removed or inserted behind the
application's back. A chain shows changes; a history rewritten with its chain recomputed shows against
the signed checkpoints of the chain heads (checkpoint.py, ADR 0010).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

GENESIS = "0" * 64


def chain_hash(previous: str, originator_id: UUID | str, version: int, topic: str, state: bytes) -> str:
    digest = hashlib.sha256()
    for part in (previous.encode(), str(originator_id).encode(), str(version).encode(), topic.encode()):
        digest.update(part + b"|")
    digest.update(bytes(state))
    return digest.hexdigest()


class ChainedRecorder(PostgresApplicationRecorder):
    def __init__(self, datastore: Any, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.chain_table = f"{events_table_name}_chain"
        self.check_identifier_length(self.chain_table)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {schema}.{table} ("
                "originator_id uuid NOT NULL, originator_version bigint NOT NULL, hash text NOT NULL, "
                "PRIMARY KEY (originator_id, originator_version))"
            ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.chain_table))
        )

    def _insert_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        for statement, params in kwargs.get("also", ()):  # the caller's writes that go with these events
            curs.execute(statement.encode(), params)
        table = SQL("{schema}.{table}").format(
            schema=Identifier(self.datastore.schema), table=Identifier(self.chain_table)
        )
        rows = []
        for originator_id, grouped in groupby(stored_events, key=lambda e: e.originator_id):
            events = list(grouped)
            previous = GENESIS
            if events[0].originator_version > 1:
                curs.execute(
                    SQL("SELECT hash FROM {0} WHERE originator_id = %s AND originator_version = %s").format(table),
                    (originator_id, events[0].originator_version - 1),
                )
                found = curs.fetchone()
                previous = found["hash"] if found else GENESIS  # a stream stored before the chain existed
            for event in events:
                previous = chain_hash(previous, originator_id, event.originator_version, event.topic, event.state)
                rows.append((originator_id, event.originator_version, previous))
        # A concurrent writer of the same stream fails here or on the event insert: either way, rolled back.
        curs.executemany(
            SQL("INSERT INTO {0} (originator_id, originator_version, hash) VALUES (%s, %s, %s)").format(table), rows
        )


@dataclass(frozen=True)
class Finding:
    store: str
    originator_id: UUID
    version: int
    notification_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"notification {self.notification_id}, " if self.notification_id else ""
        return f"{self.store}: stream {self.originator_id} version {self.version} ({where}{self.problem})"


@dataclass(frozen=True)
class Verification:
    store: str
    events: int
    streams: int
    unchained_streams: int  # stored before the chain existed: not verifiable
    findings: list[Finding]


async def verify_store(conn: asyncpg.Connection, schema: str, name: str) -> Verification:
    """Walk every stream of one store; report the first broken link of each stream."""
    events, chain = f"{schema}.{name}_events", f"{schema}.{name}_events_chain"
    rows = await conn.fetch(
        f"""SELECT coalesce(e.originator_id, c.originator_id) AS originator_id,
                   coalesce(e.originator_version, c.originator_version) AS version,
                   e.notification_id, e.topic, e.state, c.hash
            FROM {events} e FULL OUTER JOIN {chain} c
              ON c.originator_id = e.originator_id AND c.originator_version = e.originator_version
            ORDER BY 1, 2"""
    )
    findings: list[Finding] = []
    streams = unchained = count = 0
    for originator_id, grouped in groupby(rows, key=lambda r: r["originator_id"]):
        streams += 1
        stream = list(grouped)
        count += sum(r["state"] is not None for r in stream)
        if all(r["hash"] is None for r in stream):
            unchained += 1
            continue
        if problem := _first_break(stream):
            row, text = problem
            findings.append(Finding(name, originator_id, row["version"], row["notification_id"], text))
    return Verification(name, count, streams, unchained, findings)


def _first_break(stream: list[Any]) -> tuple[Any, str] | None:
    previous, expected_version = None, None
    for row in stream:
        if expected_version is not None and row["version"] != expected_version:
            return row, f"versions {expected_version} to {row['version'] - 1} are missing: removed"
        expected_version = row["version"] + 1
        if row["state"] is None:
            return row, "the event row was removed"
        if row["hash"] is None:
            if previous is None:
                continue  # events stored before the chain existed, at the start of the stream
            return row, "the event is not in the chain: inserted behind the application's back"
        # The chain of a stream starts from GENESIS, also after events stored before it existed.
        link = previous if previous is not None else GENESIS
        if chain_hash(link, row["originator_id"], row["version"], row["topic"], row["state"]) != row["hash"]:
            return row, "the event row was changed after it was stored"
        previous = row["hash"]
    return None


async def stream_hashes(conn: asyncpg.Connection, name: str, stream_id: UUID) -> dict[int, str]:
    """One stream's chain hashes by version (none for a store without a chain)."""
    if not await conn.fetchval("SELECT to_regclass($1)", f"{name}.{name}_events_chain"):
        return {}
    rows = await conn.fetch(
        f"SELECT originator_version, hash FROM {name}.{name}_events_chain WHERE originator_id = $1", stream_id
    )
    return {r["originator_version"]: r["hash"] for r in rows}
