"""What a service has learned from other services' topics about each subject.

Treatment and follow-up refuse commands for subjects in the wrong state (not enrolled, withdrawn,
dead, not infused); they know those states only from Kafka, through this small read model, kept in
each service's own schema.
"""

from __future__ import annotations

import sys
from datetime import date, datetime

import asyncpg
from pydantic import BaseModel, model_validator

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

    async def apply(self, conn: asyncpg.Connection, envelope: Envelope, payload: Payload) -> None:
        on, subject = envelope.occurred_at, envelope.subject_id
        if payload.is_clinical_record():
            await self._set(conn, subject, last_record_on=on.date(), latest=True)
        match payload:
            case Enrolled():
                await self._set(
                    conn, subject, site_id=payload.site_id, enrolled_on=on.date(), year_of_birth=payload.year_of_birth
                )
            case ScreenFailed():
                await self._set(conn, envelope.subject_id, site_id=payload.site_id, screen_failed=True)
            case ConsentWithdrawn():
                await self._set(conn, envelope.subject_id, withdrawn_on=on.date())
            case LymphodepletionGiven():
                await self._set(conn, subject, lymphodepleted_on=on.date(), earliest=True)
            case UCARTInfused() | InfusionCorrected():
                await self._set(conn, envelope.subject_id, infused_at=on, infused_on=on.date())
            case SubjectDied():
                await self._set(conn, envelope.subject_id, died_on=on.date())

    async def _set(
        self,
        conn: asyncpg.Connection,
        subject_id: str,
        *,
        latest: bool = False,
        earliest: bool = False,
        **values: object,
    ) -> None:
        """Set the values; with `latest` or `earliest`, keep the later (earlier) of the stored and new one."""
        columns = list(values)
        keep = "GREATEST" if latest else "LEAST" if earliest else ""
        table = f"{self.schema}.subject_facts"
        assignments = ", ".join(
            f"{c} = {keep}({table}.{c}, EXCLUDED.{c})" if keep else f"{c} = EXCLUDED.{c}" for c in columns
        )
        placeholders = ", ".join(f"${i}" for i in range(2, len(columns) + 2))
        await conn.execute(
            f"""INSERT INTO {self.schema}.subject_facts (subject_id, {", ".join(columns)})
                VALUES ($1, {placeholders})
                ON CONFLICT (subject_id) DO UPDATE SET {assignments}""",
            subject_id,
            *values.values(),
        )


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
