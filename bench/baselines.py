"""Raw rates of the same PostgreSQL and broker, measured in the same run: what the figures are quoted against."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from infra.replay import partitions_of
from shared import db
from shared.config import Settings
from shared.contract.topics import SOURCES

Advance = Callable[[int], None]


async def commit_rate(database_url: str, connections: int, seconds: float, advance: Advance) -> float:
    """Rows/s of insert+commit of one small row per transaction, over `connections` connections."""
    setup = await db.connect(database_url)
    table = f"bench_commit_{uuid.uuid4().hex[:6]}"
    await setup.execute(
        f"CREATE TABLE public.{table} (id bigserial PRIMARY KEY, subject_id text NOT NULL, "
        "payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
    conns = [await db.connect(database_url) for _ in range(connections)]
    done = 0
    deadline = time.monotonic() + seconds

    async def writer(conn: asyncpg.Connection, n: int) -> None:
        nonlocal done
        insert = f"INSERT INTO public.{table} (subject_id, payload) VALUES ($1, $2)"
        while time.monotonic() < deadline:
            await conn.execute(insert, f"UCT-01-{n:03d}", '{"grade": 2, "term": "Cytokine release syndrome"}')
            done += 1
            advance(1)

    started = time.monotonic()
    try:
        await asyncio.gather(*(writer(c, n) for n, c in enumerate(conns)))
        return done / (time.monotonic() - started)
    finally:
        for conn in conns:
            await conn.close()
        await setup.execute(f"DROP TABLE public.{table}")
        await setup.close()


async def read_rate(database_url: str, advance: Advance, chunk: int = 1000) -> tuple[int, float]:
    """(rows, rows/s) of reading every stored event of the three stores in notification order, as a
    rebuild reads them (whole rows, in chunks)."""
    conn = await db.connect(database_url)
    rows = 0
    started = time.monotonic()
    try:
        for source in SOURCES:
            async with conn.transaction():
                cursor = await conn.cursor(f"SELECT * FROM {source}.{source}_events ORDER BY notification_id")
                while records := await cursor.fetch(chunk):
                    rows += len(records)
                    advance(len(records))
    finally:
        await conn.close()
    return rows, rows / (time.monotonic() - started)


async def kafka_rates(bootstrap: str, messages: int, size: int, advance: Advance) -> tuple[float, float]:
    """(produced/s, consumed/s) of `messages` messages of `size` bytes, keyed like ours, on a topic of
    3 partitions: acks=all, idempotent producer, batched; one consumer reading them all from the start."""
    topic = f"bench.probe.{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()
    value = b"x" * size
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    started = time.monotonic()
    try:
        for start in range(0, messages, 1000):
            batch = [
                await producer.send(topic, value, key=f"UCT-01-{n % 1000:03d}".encode())
                for n in range(start, min(messages, start + 1000))
            ]
            await asyncio.gather(*batch)
            advance(len(batch))
    finally:
        await producer.stop()
    produced = messages / (time.monotonic() - started)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    read = 0
    started = time.monotonic()
    try:
        while read < messages:
            for records in (await consumer.getmany(timeout_ms=500, max_records=5000)).values():
                read += len(records)
                advance(len(records))
    finally:
        await consumer.stop()
    return produced, read / (time.monotonic() - started)


def signature_checks(size: int, seconds: float, advance: Advance) -> float:
    """Ed25519 verifications/s of one message of `size` bytes (cryptography, one thread): the check each
    consumed message passes before a byte of it is read bounds what one consumer process can apply."""
    key = Ed25519PrivateKey.generate()
    message = bytes(size)
    signature, public = key.sign(message), key.public_key()
    done, started = 0, time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        for _ in range(100):
            public.verify(signature, message)
        done += 100
        advance(100)
    return done / elapsed


async def end_offsets(bootstrap: str, topics: list[str]) -> int:
    """The sum of the end offsets of every partition of `topics` (messages ever written to them)."""
    found = await partitions_of(Settings(_env_file=None, kafka_bootstrap_servers=bootstrap), topics)
    if not found:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(found)).values())
    finally:
        await consumer.stop()
