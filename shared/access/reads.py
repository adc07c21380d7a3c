"""The log of who read the audit trail or exported it (DOMAIN.md: Part 11 does not require logging
reads; this study logs reads of the audit trail and of exports by policy). Auditors read it back."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.access.grants import SCHEMA

DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.audit_reads (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    user_id text NOT NULL,
    role text NOT NULL,
    service text NOT NULL,
    what text NOT NULL,
    subject_id text,
    site_id text
);
"""


async def log_read(
    pool: asyncpg.Pool, *, user_id: str, role: str, service: str, what: str, subject_id: str | None, site: str | None
) -> None:
    await pool.execute(
        f"""INSERT INTO {SCHEMA}.audit_reads (user_id, role, service, what, subject_id, site_id)
            VALUES ($1, $2, $3, $4, $5, $6)""",
        user_id,
        role,
        service,
        what,
        subject_id,
        site,
    )


async def recent_reads(pool: asyncpg.Pool, limit: int) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"""SELECT at, user_id, role, service, what, subject_id, site_id FROM {SCHEMA}.audit_reads
            ORDER BY id DESC LIMIT $1""",
        limit,
    )
    return [dict(r) for r in rows]
