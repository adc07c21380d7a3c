"""Idempotent Kafka consumers: at-least-once in, exactly-once effects.

Each message is applied in one PostgreSQL transaction together with the consumer's tracking row
(per subject and source, the last stream_version applied). A duplicate changes nothing; a gap is
recorded. The Kafka offset is committed only after that transaction (FastStream's NACK_ON_ERROR:
ack after the handler, seek back on an error). A message that can never be applied goes to the
consumer's dead-letter topic with the reason in its headers, and the partition keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol

import asyncpg
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage
from pydantic import ValidationError

from shared.contract.envelope import Envelope
from shared.contract.events import Payload, UnknownEventType
from shared.contract.upcasting import upcast
from shared.eventstore.reader import read_after, read_stream

log = logging.getLogger(__name__)

Outcome = Literal["applied", "duplicate", "dead-lettered", "reconciled"]


class PoisonMessage(Exception):
    """Raised by a projection for an event it can never apply (a broken rule, not a passing fault)."""


class Projection(Protocol):
    name: str

    async def apply(self, conn: asyncpg.Connection, envelope: Envelope, payload: Payload) -> None:
        """Apply one event; `payload` is the envelope's payload upcast to its latest version."""


DeadLetter = Callable[[KafkaMessage, str], Awaitable[None]]


class IdempotentConsumer:
    def __init__(self, projection: Projection, pool: asyncpg.Pool, *, schema: str, dead_letter: DeadLetter):
        self.projection = projection
        self.pool = pool
        self.schema = schema
        self.dead_letter = dead_letter
        self.counts: dict[Outcome, int] = {"applied": 0, "duplicate": 0, "dead-lettered": 0}  # from Kafka

    @property
    def name(self) -> str:
        return self.projection.name

    async def handle(self, message: KafkaMessage) -> Outcome:
        outcome = await self._handle(message)
        self.counts[outcome] += 1
        return outcome

    async def _handle(self, message: KafkaMessage) -> Outcome:
        try:
            envelope = Envelope.model_validate_json(message.body)
            payload = upcast(envelope.typed_payload(), envelope.occurred_at)
        except (ValidationError, UnknownEventType) as exc:
            return await self._park(message, f"invalid event: {exc}")
        try:
            return await self.apply(envelope, payload)
        except PoisonMessage as exc:
            return await self._park(message, str(exc))

    async def apply(self, envelope: Envelope, payload: Payload) -> Outcome:
        """Apply one event exactly once. Events missing before it (a gap: lost by a broker that
        restarted empty, say) are read from the source's event store and applied first."""
        async with self.pool.acquire() as conn, conn.transaction():
            last = await conn.fetchval(
                f"""SELECT last_version FROM {self.schema}.consumer_applied
                    WHERE consumer = $1 AND subject_id = $2 AND source = $3 FOR UPDATE""",
                self.name, envelope.subject_id, envelope.source,
            ) or 0
            if envelope.stream_version <= last:
                return "duplicate"
            if envelope.stream_version > last + 1:
                await self._fill_gap(conn, envelope, last)
            await self._advance(conn, envelope, payload)
        return "applied"

    async def _fill_gap(self, conn: asyncpg.Connection, envelope: Envelope, last: int) -> None:
        missing = await read_stream(conn, envelope.source, envelope.subject_id, last, envelope.stream_version)
        repaired = [e.stream_version for e in missing] == list(range(last + 1, envelope.stream_version))
        log.warning("%s: gap in %s/%s: expected version %d, got %d; %s from the event store",
                    self.name, envelope.source, envelope.subject_id, last + 1, envelope.stream_version,
                    "filled" if repaired else "could NOT be filled")
        await conn.execute(
            f"""INSERT INTO {self.schema}.consumer_gaps
                (consumer, subject_id, source, expected_version, received_version, repaired)
                VALUES ($1, $2, $3, $4, $5, $6)""",
            self.name, envelope.subject_id, envelope.source, last + 1, envelope.stream_version, repaired,
        )
        for earlier in missing:
            await self._advance(conn, earlier, upcast(earlier.typed_payload(), earlier.occurred_at))

    async def _advance(self, conn: asyncpg.Connection, envelope: Envelope, payload: Payload) -> None:
        await conn.execute(
            f"""INSERT INTO {self.schema}.consumer_applied (consumer, subject_id, source, last_version)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (consumer, subject_id, source)
                DO UPDATE SET last_version = EXCLUDED.last_version, updated_at = now()""",
            self.name, envelope.subject_id, envelope.source, envelope.stream_version,
        )
        await self.projection.apply(conn, envelope, payload)

    async def reset(self) -> None:
        """Forget everything applied: empty the projection, its tracking and its reconcile watermarks."""
        async with self.pool.acquire() as conn, conn.transaction():
            for table in ("consumer_applied", "reconcile_position"):
                await conn.execute(f"DELETE FROM {self.schema}.{table} WHERE consumer = $1", self.name)
            await self.projection.reset(conn)

    async def reconcile(self, sources: tuple[str, ...], batch: int = 500,
                        progress: Callable[[int], None] | None = None) -> int:
        """Apply, from the source event stores, every event this consumer has not applied yet.

        Kafka is the fast path; this is the safety net that makes the read models converge even
        when the broker lost messages (the embedded broker keeps nothing across a restart). Each
        source's store is read from a watermark kept per consumer, so a pass only reads what is new.
        """
        applied = 0
        for source in sources:
            after = await self.pool.fetchval(
                f"""SELECT last_notification_id FROM {self.schema}.reconcile_position
                    WHERE consumer = $1 AND source = $2""", self.name, source) or 0
            while True:
                async with self.pool.acquire() as conn:
                    rows = await read_after(conn, source, after, batch)  # type: ignore[arg-type]
                for notification_id, envelope in rows:
                    try:
                        payload = upcast(envelope.typed_payload(), envelope.occurred_at)
                        applied += await self.apply(envelope, payload) == "applied"
                    except (ValidationError, UnknownEventType, PoisonMessage) as exc:  # never applicable: park it
                        await self._record_dead_letter(f"store:{source}", -1, notification_id, str(exc))
                if not rows:
                    break
                if progress:
                    progress(len(rows))
                after = rows[-1][0]
                await self.pool.execute(
                    f"""INSERT INTO {self.schema}.reconcile_position (consumer, source, last_notification_id)
                        VALUES ($1, $2, $3) ON CONFLICT (consumer, source)
                        DO UPDATE SET last_notification_id = EXCLUDED.last_notification_id""",
                    self.name, source, after)
        if applied:
            self.counts["reconciled"] = self.counts.get("reconciled", 0) + applied
        return applied

    async def _park(self, message: KafkaMessage, reason: str) -> Outcome:
        raw = message.raw_message
        await self.dead_letter(message, reason)
        await self._record_dead_letter(raw.topic, raw.partition, raw.offset, reason)
        return "dead-lettered"

    async def _record_dead_letter(self, topic: str, partition: int, offset: int, reason: str) -> None:
        log.error("%s: dead letter %s[%s]@%s: %s", self.name, topic, partition, offset, reason)
        await self.pool.execute(
            f"""INSERT INTO {self.schema}.dead_letters (consumer, topic, kafka_partition, kafka_offset, reason)
                VALUES ($1, $2, $3, $4, $5)""",
            self.name, topic, partition, offset, reason[:2000],
        )


def subscribe(
    broker: KafkaBroker,
    consumer: IdempotentConsumer,
    *,
    topics: list[str],
    group_id: str,
    dead_letter_topic: str,
    retry_delay: float = 1.0,
) -> None:
    """Attach the consumer to the broker: earliest offset, offsets committed after the effects."""

    @broker.subscriber(
        *topics,
        group_id=group_id,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title=f"{consumer.name}:consume",
        description=f"{consumer.name}: applies each event once (tracked per subject, source and "
        f"stream_version). Unprocessable messages go to {dead_letter_topic}.",
    )
    async def on_message(message: KafkaMessage) -> None:
        try:
            await consumer.handle(message)
        except Exception:
            # A passing fault (database down...): wait, then let FastStream seek back and redeliver.
            log.exception("%s: could not apply a message; it will be redelivered", consumer.name)
            await asyncio.sleep(retry_delay)
            raise


def dead_letter_publisher(broker: KafkaBroker, topic: str, consumer: str) -> DeadLetter:
    publisher = broker.publisher(
        topic,
        title=f"{topic}:publish",
        description=f"Messages {consumer} could never process; headers dead_letter_reason, "
        "original_topic, original_partition, original_offset.",
    )

    async def dead_letter(message: KafkaMessage, reason: str) -> None:
        raw = message.raw_message
        headers = {k: v for k, v in message.headers.items() if isinstance(v, str)}
        headers.update(
            dead_letter_reason=reason[:1000],
            original_topic=raw.topic,
            original_partition=str(raw.partition),
            original_offset=str(raw.offset),
        )
        await publisher.publish(message.body, key=raw.key, headers=headers)

    return dead_letter


class RebuildableProjection(Projection, Protocol):
    """A projection that can be rebuilt from the event stores: `version` changes whenever the shape
    or meaning of its read model changes, and `reset` empties it."""

    version: str

    async def reset(self, conn: asyncpg.Connection) -> None: ...


async def rebuild_if_outdated(consumer: IdempotentConsumer, sources: tuple[str, ...]) -> int | None:
    """Rebuild the consumer's projection from the event stores when its stored version differs
    from the code's; return how many events were applied (None when it was up to date). Runs before
    the consumer starts; events committed meanwhile arrive from Kafka and are applied after."""
    projection = consumer.projection
    version = getattr(projection, "version", None)
    if version is None:
        return None
    pool, table = consumer.pool, f"{consumer.schema}.projection_versions"
    if await pool.fetchval(f"SELECT version FROM {table} WHERE projection = $1", consumer.name) == version:
        return None
    log.warning("%s: read model version %s is new; rebuilding it from the event stores", consumer.name, version)
    await consumer.reset()
    applied = await consumer.reconcile(sources)
    await pool.execute(f"""INSERT INTO {table} (projection, version) VALUES ($1, $2)
                           ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version""", consumer.name, version)
    log.warning("%s: rebuilt from %d events", consumer.name, applied)
    return applied
