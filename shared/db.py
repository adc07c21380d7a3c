"""asyncpg access: the pool, queries that answer 503 at once when PostgreSQL is down, and the plumbing
tables every service keeps in its own schema."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import asyncpg

from shared.errors import DependencyUnavailable
from shared.transport import TransportError, asyncpg_options

T = TypeVar("T")

# What PostgreSQL being down or overloaded looks like to a client (not a bug, not bad data).
UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError,  # ConnectionError, a socket that is not there
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, cannot connect now, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
)


@contextmanager
def _certificate_explained() -> Iterator[None]:
    # A server certificate that does not verify is a setting to fix, not an outage to wait out.
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(
            f"PostgreSQL's certificate does not verify ({exc.verify_message}): "
            "check sslrootcert and the host name in DATABASE_URL"
        ) from exc


async def create_pool(database_url: str, *, min_size: int = 1, max_size: int = 5) -> asyncpg.Pool:
    """A pool over the URL's TLS settings (`shared.transport`)."""
    with _certificate_explained():
        return await asyncpg.create_pool(
            database_url, min_size=min_size, max_size=max_size, timeout=10, **asyncpg_options(database_url)
        )


async def connect(database_url: str) -> asyncpg.Connection:
    """One connection over the URL's TLS settings (`shared.transport`)."""
    with _certificate_explained():
        return await asyncpg.connect(database_url, timeout=10, **asyncpg_options(database_url))


async def answered(query: Awaitable[T], timeout: float = 2.0) -> T:
    """What `query` gives, or DependencyUnavailable unless PostgreSQL answers within `timeout` seconds.

    Every request reads the caller's grants through this before anything else (`shared/http/identity`),
    so a command hears at once that the database is down: the event store's own client retries a dead
    server for seconds before it gives up, and a coordinator should know at once that nothing was stored."""
    try:
        return await asyncio.wait_for(query, timeout)
    except UNREACHABLE as exc:
        raise DependencyUnavailable(
            "The database is unreachable; nothing was stored. Retry in a moment.", retryable=True
        ) from exc


def add_columns(schema: str, table: str, **columns: str) -> str:
    """Add what a table created by an older version lacks. Only then: ALTER TABLE takes the table's
    strongest lock even when the columns exist, and a service starting next to a transaction that
    reads the table (a consumer held up, a killed process's last one) would wait for it."""
    checks = " OR ".join(
        f"NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{schema}' "
        f"AND table_name = '{table}' AND column_name = '{name}')"
        for name in columns
    )
    adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in columns.items())
    return f"DO $$ BEGIN IF {checks} THEN ALTER TABLE {schema}.{table} {adds}; END IF; END $$;"


def plumbing_ddl(schema: str) -> str:
    """Outbox position, consumer tracking, parked events and idempotency keys of one service."""
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

    -- Events a consumer could never apply, with the reason, kept until an operator retries or
    -- dismisses them (`ucart parked`). in_store: the row is the event its source's store holds, so the
    -- consumer steps over it and its stream goes on; a message no store holds (unreadable, forged) is
    -- only recorded.
    CREATE TABLE IF NOT EXISTS {schema}.parked_events (
        id bigserial PRIMARY KEY,
        consumer text NOT NULL,
        in_store boolean NOT NULL,
        source text,
        stream_id uuid,
        stream_version integer,
        subject_id text,
        event_id uuid,
        event_type text,
        topic text,
        kafka_partition integer,
        kafka_offset bigint,
        notification_id bigint,
        body bytea NOT NULL,
        reason text NOT NULL,
        parked_at timestamptz NOT NULL DEFAULT now(),
        retried_at timestamptz,
        resolved_at timestamptz,
        resolution text
    );
    -- A Kafka message's signature headers, so that a retry verifies it again.
    {add_columns(schema, "parked_events", key_id="text", signature="text")}
    CREATE UNIQUE INDEX IF NOT EXISTS parked_events_one_hole ON {schema}.parked_events
        (consumer, source, stream_id, stream_version) WHERE in_store AND resolved_at IS NULL;

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
    conn = await connect(server_url)
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
