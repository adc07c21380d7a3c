"""asyncpg access: the pool, and the plumbing tables every service keeps in its own schema."""

from __future__ import annotations

import asyncpg


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    return await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size, timeout=10)


def plumbing_ddl(schema: str) -> str:
    """Outbox position, consumer tracking, dead letters and idempotency keys of one service."""
    return f"""
    CREATE SCHEMA IF NOT EXISTS {schema};

    CREATE TABLE IF NOT EXISTS {schema}.outbox_position (
        relay text PRIMARY KEY,
        last_notification_id bigint NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );

    -- What each consumer has applied: per subject and source, the last stream_version.
    CREATE TABLE IF NOT EXISTS {schema}.consumer_applied (
        consumer text NOT NULL,
        subject_id text NOT NULL,
        source text NOT NULL,
        last_version integer NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, subject_id, source)
    );

    CREATE TABLE IF NOT EXISTS {schema}.consumer_gaps (
        id bigserial PRIMARY KEY,
        consumer text NOT NULL,
        subject_id text NOT NULL,
        source text NOT NULL,
        expected_version integer NOT NULL,
        received_version integer NOT NULL,
        detected_at timestamptz NOT NULL DEFAULT now()
    );
    ALTER TABLE {schema}.consumer_gaps ADD COLUMN IF NOT EXISTS repaired boolean NOT NULL DEFAULT false;

    -- How far each consumer has reconciled itself against each source's event store.
    CREATE TABLE IF NOT EXISTS {schema}.reconcile_position (
        consumer text NOT NULL,
        source text NOT NULL,
        last_notification_id bigint NOT NULL,
        PRIMARY KEY (consumer, source)
    );

    CREATE TABLE IF NOT EXISTS {schema}.projection_versions (
        projection text PRIMARY KEY,
        version text NOT NULL
    );

    CREATE TABLE IF NOT EXISTS {schema}.dead_letters (
        id bigserial PRIMARY KEY,
        consumer text NOT NULL,
        topic text NOT NULL,
        kafka_partition integer NOT NULL,
        kafka_offset bigint NOT NULL,
        reason text NOT NULL,
        received_at timestamptz NOT NULL DEFAULT now()
    );

    CREATE TABLE IF NOT EXISTS {schema}.idempotency_keys (
        key text PRIMARY KEY,
        request_fingerprint text NOT NULL,
        status_code integer,
        response_body jsonb,
        created_at timestamptz NOT NULL DEFAULT now()
    );
    """


async def ensure_database(server_url: str, database: str) -> str:
    """Create `database` on the server if missing; return its URL (same server, same options)."""
    conn = await asyncpg.connect(server_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()
    return with_database(server_url, database)


def with_database(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))
