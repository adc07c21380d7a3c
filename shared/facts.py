"""What a service has learned from other services' topics about each subject.

Treatment and follow-up refuse commands for subjects in the wrong state (not enrolled, withdrawn,
dead, not infused); they know those states only from Kafka, through this small read model, kept in
each service's own schema.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg
from pydantic import BaseModel, model_validator

from shared.consumer import Event
from shared.contract.envelope import Envelope
from shared.contract.events import (
    ConsentWithdrawn,
    Enrolled,
    InfusionCorrected,
    LymphodepletionGiven,
    Payload,
    ScreenFailed,
    SubjectDied,
    UCARTInfused,
)
from shared.contract.topics import Source
from shared.db import add_columns
from shared.readmodel import ReadModel


def ddl(schema: str) -> str:
    return f"""
    CREATE TABLE IF NOT EXISTS {schema}.subject_facts (
        subject_id text PRIMARY KEY,
        site_id text,
        enrolled_on date,
        screen_failed boolean NOT NULL DEFAULT false,
        withdrawn_on date,
        infused_at timestamptz,
        died_on date
    );
    -- The clinical date of the infusion in the site's own offset (timestamptz keeps only the instant);
    -- the year of birth (ages); the first lymphodepletion day (treatment-emergence); the latest clinical
    -- record of the subject in the sources (nothing is declared over before it).
    {
        add_columns(
            schema,
            "subject_facts",
            infused_on="date",
            year_of_birth="integer",
            lymphodepleted_on="date",
            last_record_on="date",
        )
    }
    """


class SubjectFacts(BaseModel):
    subject_id: str
    site_id: str | None = None
    enrolled_on: date | None = None
    screen_failed: bool = False
    withdrawn_on: date | None = None
    infused_at: datetime | None = None
    infused_on: date | None = None  # study day 0: the local date at the site
    died_on: date | None = None
    year_of_birth: int | None = None
    lymphodepleted_on: date | None = None  # the first lymphodepletion day
    last_record_on: date | None = None  # the latest clinical record in the sources this service reads

    @model_validator(mode="after")
    def _day_0(self) -> SubjectFacts:
        if self.infused_on is None and self.infused_at is not None:
            object.__setattr__(self, "infused_on", self.infused_at.date())
        return self


async def load(conn: asyncpg.Connection | asyncpg.Pool, schema: str, subject_id: str) -> SubjectFacts | None:
    row = await conn.fetchrow(f"SELECT * FROM {schema}.subject_facts WHERE subject_id = $1", subject_id)
    return SubjectFacts(**dict(row)) if row else None


async def site_of(pool: asyncpg.Pool, schema: str, subject_id: str) -> str | None:
    """The subject's site as this service learned it (None: not learned yet)."""
    site: str | None = await pool.fetchval(
        f"SELECT site_id FROM {schema}.subject_facts WHERE subject_id = $1", subject_id
    )
    return site


class SubjectFactsProjection:
    """Keeps `<schema>.subject_facts` from Enrolled, ScreenFailed, ConsentWithdrawn, LymphodepletionGiven,
    UCARTInfused, InfusionCorrected and SubjectDied, and the date of every clinical record."""

    def __init__(self, schema: str):
        self.schema = schema
        self.name = f"{schema}-subject-facts"

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute(f"TRUNCATE {self.schema}.subject_facts")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """The rows the events change are read (and locked) once, changed in memory, and written once."""
        found = [(envelope.subject_id, c) for envelope, payload in events if (c := changes(envelope, payload))]
        if not found:
            return
        table = f"{self.schema}.subject_facts"
        # An upsert that changes nothing locks each row, and makes a new subject's (as for the journeys).
        rows = await conn.fetch(
            f"""INSERT INTO {table} AS f (subject_id) SELECT s FROM unnest($1::text[]) AS s ORDER BY s
                ON CONFLICT (subject_id) DO UPDATE SET subject_id = f.subject_id RETURNING *""",
            sorted({subject for subject, _ in found}),
        )
        current = {r["subject_id"]: dict(r) for r in rows}
        for subject, change in found:
            _merge(current[subject], change)
        names = [c for c in next(iter(current.values())) if c != "subject_id"]
        columns, values = ", ".join(names), ", ".join(f"t.{c}" for c in names)
        await conn.execute(
            f"""UPDATE {table} AS f SET ({columns}) = ({values})
                FROM jsonb_populate_recordset(NULL::{table}, $1::jsonb) AS t WHERE f.subject_id = t.subject_id""",
            json.dumps(list(current.values()), default=lambda v: v.isoformat()),
        )


# Columns that keep the later (the earlier) of what is stored and what an event says: the sources'
# events arrive in any order.
LATEST, EARLIEST = frozenset({"last_record_on"}), frozenset({"lymphodepleted_on"})


def changes(envelope: Envelope, payload: Payload) -> dict[str, object]:
    """What one event says about the subject's facts (nothing, for most events)."""
    on = envelope.occurred_at
    found: dict[str, object] = {"last_record_on": on.date()} if payload.is_clinical_record() else {}
    match payload:
        case Enrolled():
            found.update(site_id=payload.site_id, enrolled_on=on.date(), year_of_birth=payload.year_of_birth)
        case ScreenFailed():
            found.update(site_id=payload.site_id, screen_failed=True)
        case ConsentWithdrawn():
            found.update(withdrawn_on=on.date())
        case LymphodepletionGiven():
            found.update(lymphodepleted_on=on.date())
        case UCARTInfused() | InfusionCorrected():
            found.update(infused_at=on, infused_on=on.date())
        case SubjectDied():
            found.update(died_on=on.date())
    return found


def _merge(row: dict[str, Any], change: dict[str, object]) -> None:
    for column, value in change.items():
        stored = row.get(column)
        if stored is not None and column in LATEST:
            value = max(stored, value)
        elif stored is not None and column in EARLIEST:
            value = min(stored, value)
        row[column] = value


def read_model(service: Source, sources: tuple[Source, ...]) -> ReadModel:
    """The subject facts `service` keeps from `sources` (this module is their shape and fold)."""
    return ReadModel(
        service,
        "subject-facts",
        f"{service}-facts",
        sources,
        "subject_facts",
        ddl,
        SubjectFactsProjection,
        defined_by=(sys.modules[__name__],),
    )
