"""Rebuilding, comparing and replaying read models (for operators and auditors).

- rebuild: empty a live projection and apply every event of the stores again (progress bar, count);
  the live consumers keep running (their tracking makes the two meet without doubling anything).
- compare: build a replica of a projection from the event stores in a scratch schema and compare it
  row by row with the live one.
- replay from Kafka: build the replica from the topics, from the earliest offset, instead; every
  message is verified against the public keys first, as the live consumers do.
- parked: list what the consumers parked, retry it after a fix, or dismiss it.

An event that cannot be applied is parked (in the replica's own schema, for a comparison) and the
work goes on; a comparison reports what it parked.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services import registry
from shared import db, parking
from shared.config import Settings
from shared.consumer import IdempotentConsumer, KafkaOrigin, Outcome
from shared.contract.topics import SOURCES, Source, topic_for
from shared.eventstore.reader import store_exists
from shared.signing import Verifier
from shared.transport import kafka_options


def _ddl(name: str, schema: str) -> str:
    return db.plumbing_ddl(schema) + registry.named(name).ddl(schema)


async def count_events(pool: asyncpg.Pool, sources: tuple[Source, ...]) -> int:
    total = 0
    async with pool.acquire() as conn:
        for source in sources:
            if await store_exists(conn, source):
                total += await conn.fetchval(f"SELECT count(*) FROM {source}.{source}_events")
    return total


# What reads only the event stores (trusted as they are) needs no public key.
STORES_ONLY = Verifier({})


def _consumer(name: str, pool: asyncpg.Pool, schema: str, verifier: Verifier = STORES_ONLY) -> IdempotentConsumer:
    # No dead-letter topic: the tools park in the table only.
    return IdempotentConsumer(registry.named(name).projection(schema), pool, schema=schema, verifier=verifier)


@dataclass(frozen=True)
class Comparison:
    differences: list[str]  # rows of the live projection that differ from the replica's
    parked: list[parking.Parked]  # events the replica could not apply


async def rebuild(pool: asyncpg.Pool, name: str, progress: Callable[[int], None] | None = None) -> int:
    """Rebuild the live projection in place; return how many events were applied."""
    model = registry.named(name)
    consumer = _consumer(name, pool, model.service)
    return await consumer.rebuild(model.sources, progress=progress)


async def _scratch(pool: asyncpg.Pool, name: str, verifier: Verifier = STORES_ONLY) -> tuple[str, IdempotentConsumer]:
    schema = f"replica_{uuid.uuid4().hex[:8]}"
    await pool.execute(_ddl(name, schema))
    return schema, _consumer(name, pool, schema, verifier)


async def differences(pool: asyncpg.Pool, name: str, replica_schema: str) -> list[str]:
    """Rows of the live projection that differ from the replica's (empty: equal)."""
    model = registry.named(name)
    key = "subject_id"
    live = {r[key]: dict(r) for r in await pool.fetch(f"SELECT * FROM {model.service}.{model.table}")}
    replica = {r[key]: dict(r) for r in await pool.fetch(f"SELECT * FROM {replica_schema}.{model.table}")}
    ignore = {"updated_at"}
    out = [f"{k}: only in the live projection" for k in live.keys() - replica.keys()]
    out += [f"{k}: missing from the live projection" for k in replica.keys() - live.keys()]
    out += [
        f"{k}: differs"
        for k in live.keys() & replica.keys()
        if {c: v for c, v in live[k].items() if c not in ignore}
        != {c: v for c, v in replica[k].items() if c not in ignore}
    ]
    return sorted(out)


async def _compared(pool: asyncpg.Pool, name: str, schema: str) -> Comparison:
    parked = await parking.unresolved(pool, schema)
    return Comparison(await differences(pool, name, schema), parked)


async def compare_with_stores(
    pool: asyncpg.Pool, name: str, progress: Callable[[int], None] | None = None, keep: bool = False
) -> Comparison:
    schema, consumer = await _scratch(pool, name)
    try:
        await consumer.reconcile(registry.named(name).sources, progress=progress)
        return await _compared(pool, name, schema)
    finally:
        if not keep:
            await pool.execute(f"DROP SCHEMA {schema} CASCADE")


async def compare_with_kafka(
    pool: asyncpg.Pool,
    name: str,
    settings: Settings,
    verifier: Verifier,
    progress: Callable[[int], None] | None = None,
) -> Comparison:
    """Replay the topics (of the settings' broker and prefix) from the earliest offset into a replica;
    compare it with the live one. A message that does not verify with `verifier` is parked in the
    replica, as live. (The embedded broker keeps only what was published since it started.)"""
    schema, consumer = await _scratch(pool, name, verifier)
    reader = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **kafka_options(settings)
    )
    await reader.start()
    try:
        topics = [topic_for(s, settings.topic_prefix) for s in registry.named(name).sources]
        partitions = await partitions_of(settings, topics)
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        end = await reader.end_offsets(partitions)
        while [tp for tp in partitions if await reader.position(tp) < end[tp]]:
            for records in (await reader.getmany(timeout_ms=500)).values():
                for r in records:
                    await consumer.receive(KafkaOrigin.of(r))
                if progress:
                    progress(len(records))
        return await _compared(pool, name, schema)
    finally:
        await reader.stop()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")


def consumer_named(pool: asyncpg.Pool, consumer: str, verifier: Verifier) -> IdempotentConsumer | None:
    """The live consumer of that name (as parked events name it)."""
    for model in registry.READ_MODELS:
        if model.consumer == consumer:
            return _consumer(model.alias, pool, model.service, verifier)
    return None


async def parked(pool: asyncpg.Pool, refs: list[str] | None = None) -> list[tuple[str, parking.Parked]]:
    """Unresolved parked events of every service, as (reference, event); `refs` picks some by
    reference (`service:id`, as listed)."""
    found = []
    async with pool.acquire() as conn:
        for schema in SOURCES:
            if not await conn.fetchval("SELECT to_regclass($1)", f"{schema}.parked_events"):
                continue
            for event in await parking.unresolved(conn, schema):
                ref = f"{schema}:{event.id}"
                if refs is None or ref in refs:
                    found.append((ref, event))
    return found


async def retry_parked(
    pool: asyncpg.Pool, refs: list[str] | None, verifier: Verifier
) -> list[tuple[str, Outcome | str]]:
    """Apply parked events again (all of them with refs None): each ends applied, duplicate, or
    still parked with its new reason. A message from Kafka is verified again with `verifier` (the
    keys configured now). A relay's parked event is not retried here (see the text)."""
    results: list[tuple[str, Outcome | str]] = []
    for ref, event in await parked(pool, refs):
        consumer = consumer_named(pool, event.consumer, verifier)
        if consumer is None:
            results.append((ref, RELAY_NOT_RETRIED))
            continue
        results.append((ref, await consumer.retry(event)))
    return results


RELAY_NOT_RETRIED = (
    "not retried: the relay did not publish this stored event; once the row reads again, "
    'move the relay\'s position back before it (docs/operations.md, "Parked events") and '
    "dismiss it"
)


async def dismiss_parked(pool: asyncpg.Pool, refs: list[str] | None, note: str) -> list[str]:
    """Mark parked events as dealt with, without applying them (the note says why)."""
    dismissed = []
    for ref, event in await parked(pool, refs):
        await parking.resolve(pool, ref.split(":")[0], event.id, f"dismissed: {note}")
        dismissed.append(ref)
    return dismissed


async def partitions_of(settings: Settings, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of those topics that exist, in order, from the broker's metadata (a consumer with
    nothing assigned may know no topic: Apache Kafka answers its metadata requests with none)."""
    admin = AIOKafkaAdminClient(**kafka_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return sorted(
        TopicPartition(d["topic"], p["partition"]) for d in described if not d["error_code"] for p in d["partitions"]
    )
