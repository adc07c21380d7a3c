"""The journey read model in PostgreSQL: one JSON row per subject, updated by one event at a time."""

from __future__ import annotations

import sys

import asyncpg

from services.followup.projections import journey as journeys
from shared import clinical
from shared.contract import upcasting
from shared.contract.envelope import Envelope
from shared.contract.events import Payload
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

    async def apply(self, conn: asyncpg.Connection, envelope: Envelope, payload: Payload) -> None:
        row = await conn.fetchval(
            f"SELECT journey FROM {self.schema}.journeys WHERE subject_id = $1 FOR UPDATE", envelope.subject_id
        )
        current = journeys.Journey.model_validate_json(row) if row else journeys.Journey(subject_id=envelope.subject_id)
        updated = journeys.apply(current, envelope, payload)
        await conn.execute(
            f"""INSERT INTO {self.schema}.journeys (subject_id, journey) VALUES ($1, $2::jsonb)
                ON CONFLICT (subject_id) DO UPDATE SET journey = EXCLUDED.journey, updated_at = now()""",
            envelope.subject_id,
            updated.model_dump_json(),
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
