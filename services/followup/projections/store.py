"""The journey read model in PostgreSQL: one JSON row per subject, updated a batch of events at a time."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import asyncpg

from services.followup.projections import journey as journeys
from shared import clinical
from shared.consumer import Event
from shared.contract import upcasting
from shared.contract.topics import SOURCES
from shared.readmodel import ReadModel


def ddl(schema: str) -> str:
    return f"""
    CREATE TABLE IF NOT EXISTS {schema}.journeys (
        subject_id text PRIMARY KEY,
        journey jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    """


class JourneyProjection:
    """Consumes all three topics into `<schema>.journeys`."""

    def __init__(self, schema: str):
        self.schema = schema
        self.name = f"{schema}-journey"

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"TRUNCATE {self.schema}.journeys")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Each journey the events touch is read (and locked) once, folded in memory, and written once."""
        table = f"{self.schema}.journeys"
        # An upsert that changes nothing locks each row, and makes a new subject's: a SELECT ... FOR UPDATE
        # locks no row that does not exist yet, and a concurrent fold of a new subject would be overwritten.
        # In subject order, so that two batches lock their rows in the same order.
        rows = await conn.fetch(
            f"""INSERT INTO {table} AS j (subject_id, journey)
                SELECT s, jsonb_build_object('subject_id', s) FROM unnest($1::text[]) AS s ORDER BY s
                ON CONFLICT (subject_id) DO UPDATE SET journey = j.journey
                RETURNING subject_id, journey""",
            sorted({envelope.subject_id for envelope, _ in events}),
        )
        touched = {r["subject_id"]: journeys.Journey.model_validate_json(r["journey"]) for r in rows}
        for envelope, payload in events:
            journeys.fold(touched[envelope.subject_id], envelope, payload)
        await conn.execute(
            f"""UPDATE {table} AS j SET journey = t.journey, updated_at = now()
                FROM unnest($1::text[], $2::jsonb[]) AS t(subject_id, journey) WHERE j.subject_id = t.subject_id""",
            list(touched),
            [journey.model_dump_json() for journey in touched.values()],
        )


async def get(pool: asyncpg.Pool, schema: str, subject_id: str) -> journeys.Journey | None:
    row = await pool.fetchval(f"SELECT journey FROM {schema}.journeys WHERE subject_id = $1", subject_id)
    return journeys.Journey.model_validate_json(row) if row else None


async def all_journeys(pool: asyncpg.Pool, schema: str) -> list[journeys.Journey]:
    rows = await pool.fetch(f"SELECT journey FROM {schema}.journeys ORDER BY subject_id")
    return [journeys.Journey.model_validate_json(r["journey"]) for r in rows]


# Every event of every service, into one JSON row per subject. Its shape and fold: the journey module,
# this one, and the clinical definitions and upcasters they read events with.
JOURNEY = ReadModel(
    "followup",
    "journey",
    "journey",
    SOURCES,
    "journeys",
    ddl,
    JourneyProjection,
    defined_by=(journeys, sys.modules[__name__], clinical, upcasting),
)
