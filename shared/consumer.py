"""Idempotent Kafka consumers: at-least-once in, exactly-once effects, and nothing halts them.

Each message is applied in one PostgreSQL transaction together with the consumer's tracking row
(per subject and source, the last stream_version applied). A duplicate changes nothing; a gap is
filled from the source's event store and recorded. The Kafka offset is committed only after that
transaction (FastStream's NACK_ON_ERROR: ack after the handler, seek back on an error).

A passing fault (the database unreachable, a deadlock) is retried for as long as it lasts. Any other
failure is tried once more; failing the same way again, the event is parked (`shared.parking`): a
row with the reason, a copy on the consumer's dead-letter topic, and the partition, reconciliation,
rebuilds and start-up all go on. A message that cannot even be read is parked on sight.

Every message from Kafka is verified before it is read: the Ed25519 signature in its headers must
cover its exact value bytes, by a key of the event's source (`shared.signing`). One that is unsigned,
signed by an unknown key or another service's, or altered, is parked on sight, unread, with a reason
starting with "signature"; no store holds it, so it can never hide or block the real event. The event
stores are trusted as they are: reconciliation and rebuilds read them directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Literal, Protocol
from uuid import UUID

import asyncpg
from aiokafka import ConsumerRecord
from faststream import AckPolicy
from faststream.kafka import KafkaBroker, KafkaMessage

from shared import db, parking
from shared.contract.envelope import Envelope
from shared.contract.events import Payload
from shared.contract.topics import Source, source_named
from shared.contract.upcasting import latest_payload
from shared.eventstore.aggregate import subject_uuid
from shared.eventstore.reader import StoredRow, rows_after, stream_rows
from shared.signing import Verifier, carried_signature, service_of

log = logging.getLogger(__name__)

Outcome = Literal["applied", "duplicate", "parked"]

# Faults that pass: never a reason to park an event.
TRANSIENT = (*db.UNREACHABLE, asyncpg.exceptions.TransactionRollbackError)  # + deadlock, serialization failure

BATCH = 500  # records per batch from the broker, at most
REBUILD_BATCH = 2000  # rows per batch from a store, in a rebuild (bounded memory, few round trips)
BATCH_WAIT_MS = 10  # how long an idle subscriber waits (twice over) between polls


# An event as a projection folds it: the envelope, and its payload upcast to the latest version.
Event = tuple[Envelope, Payload]


class Projection(Protocol):
    name: str

    async def apply(self, conn: asyncpg.Connection, events: Sequence[Event]) -> None:
        """Fold events into the read model, in `conn`'s transaction: any subjects, each subject's events
        from one source in stream order. Reads and writes a row the batch touches once, not per event."""

    async def reset(self, conn: asyncpg.Connection) -> None:
        """Empty the read model (before a rebuild)."""


def read_message(body: bytes) -> tuple[Envelope, Payload]:
    """Parse an envelope and upcast its payload to the latest version; ValueError if it cannot be."""
    try:
        envelope = Envelope.model_validate_json(body)
        return envelope, latest_payload(envelope)
    except Exception as exc:
        raise ValueError(f"invalid event: {exc}") from exc


def read_row(row: StoredRow) -> tuple[Envelope, Payload]:
    try:
        return row.decoded()
    except Exception as exc:
        raise ValueError(f"stored event cannot be read: {exc}") from exc


@dataclass(frozen=True)
class KafkaOrigin:
    """Where a message came from, to park it with and to dead-letter it."""

    topic: str
    partition: int
    offset: int
    body: bytes
    key: bytes | None = None
    key_id: str | None = None  # the signature headers as they came (`shared.signing.carried_signature`)
    signature: str | None = None

    @classmethod
    def of(cls, record: ConsumerRecord) -> KafkaOrigin:
        key_id, signature = carried_signature(record.headers or ())
        return cls(record.topic, record.partition, record.offset, record.value or b"", record.key, key_id, signature)

    def parcel(self, reason: str) -> parking.Parcel:
        """The message as it came, to park (with its signature, so that a retry verifies it again)."""
        return parking.Parcel(
            body=self.body,
            reason=reason,
            topic=self.topic,
            kafka_partition=self.partition,
            kafka_offset=self.offset,
            key_id=self.key_id,
            signature=self.signature,
        )


Origin = KafkaOrigin | StoredRow


class _OneAtATime(Exception):
    """A batch that cannot be applied together (rolled back; its events go one at a time)."""


# Which stored event: (source, stream id, stream version).
EventKey = tuple[str, UUID, int]


class Failure(Exception):
    """An event failed to apply, and not because a dependency is down: it may be poison."""

    def __init__(self, envelope: Envelope | None, row: StoredRow | None, cause: BaseException):
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.envelope, self.row, self.cause = envelope, row, cause

    @property
    def key(self) -> EventKey:
        if self.row is not None:
            return self.row.source, self.row.stream_id, self.row.version
        assert self.envelope is not None
        return _event_key(self.envelope)


def _event_key(envelope: Envelope) -> EventKey:
    """Which stored event this is: source, stream, version (the key of a failure)."""
    return envelope.source, subject_uuid(envelope.subject_id), envelope.stream_version


# (what was parked, the message key, the headers saying why and where from)
DeadLetter = Callable[[parking.Parcel, bytes | None, dict[str, str]], Awaitable[None]]


class IdempotentConsumer:
    def __init__(
        self,
        projection: Projection,
        pool: asyncpg.Pool,
        *,
        schema: str,
        verifier: Verifier,
        dead_letter: DeadLetter | None = None,
    ):
        """`verifier`: the public keys messages from Kafka must be signed with (an empty one for a
        consumer that reads only the event stores: it would park any message)."""
        self.projection = projection
        self.pool = pool
        self.schema = schema
        self.verifier = verifier
        self.dead_letter = dead_letter
        self.counts: dict[str, int] = {"applied": 0, "duplicate": 0, "parked": 0}  # messages from Kafka
        self._failures: dict[EventKey, tuple[str, int]] = {}  # event -> (last error, attempts)

    @property
    def name(self) -> str:
        return self.projection.name

    async def handle(self, message: KafkaMessage) -> list[Outcome]:
        """A batch of records from the broker (a batch subscriber's message)."""
        records: tuple[ConsumerRecord, ...] = message.raw_message  # a batch subscriber's
        outcomes = await self.receive_many([KafkaOrigin.of(r) for r in records])
        for outcome in outcomes:
            self.counts[outcome] += 1
        return outcomes

    async def receive_many(self, origins: Sequence[KafkaOrigin]) -> list[Outcome]:
        """Messages from Kafka, applied together in one transaction. What does not verify or cannot be read
        is parked on sight; when the batch cannot go together (a gap, a parked event of one of its streams,
        an event that fails), each event goes on its own, as `receive` takes it."""
        outcomes: dict[int, Outcome] = {}
        readable: list[tuple[int, Envelope, Payload, KafkaOrigin]] = []
        for i, origin in enumerate(origins):
            try:
                readable.append((i, *self._read(origin), origin))
            except ValueError as exc:
                outcomes[i] = await self._park(origin.parcel(str(exc)), key=origin.key)
        together = await self.apply_together([(envelope, payload) for _, envelope, payload, _ in readable])
        for n, (i, envelope, payload, origin) in enumerate(readable):
            outcomes[i] = (
                together[n]
                if together is not None
                else await self._apply_or_park(envelope, payload, origin, retry_now=True)
            )
        return [outcomes[i] for i in range(len(origins))]

    async def receive(self, origin: KafkaOrigin, *, redelivered: bool = False) -> Outcome:
        """One message. `redelivered`: the broker delivers a failed message again (a failure is
        raised); otherwise it is tried again at once."""
        try:
            envelope, payload = self._read(origin)
        except ValueError as exc:
            return await self._park(origin.parcel(str(exc)), key=origin.key)
        return await self._apply_or_park(envelope, payload, origin, retry_now=not redelivered)

    def _read(self, origin: KafkaOrigin) -> tuple[Envelope, Payload]:
        """A message from Kafka, verified before a byte of it is read; ValueError if it does not verify
        or cannot be read. Besides the signature, the key must be one of the event's source: a service
        speaks for itself only."""
        if problem := self.verifier.check(origin.body, origin.key_id, origin.signature):
            raise ValueError(problem)
        envelope, payload = read_message(origin.body)
        signer = service_of(origin.key_id or "")
        if signer != envelope.source:
            raise ValueError(
                f"signature: {origin.key_id} is a key of {signer}, not of {envelope.source} (the event's source)"
            )
        return envelope, payload

    async def _apply_or_park(
        self,
        envelope: Envelope,
        payload: Payload,
        origin: Origin,
        *,
        retry_now: bool,
        unpark: bool = False,
        park_itself: bool = True,
    ) -> Outcome:
        while True:
            try:
                outcome = await self.apply(envelope, payload, unpark=unpark)
            except Failure as failure:
                if not self._failed_again(failure):
                    if retry_now:
                        continue
                    raise
                earlier = failure.row if failure.row is not None and failure.row != origin else None
                if earlier is None and not park_itself:
                    raise
                await self._park(await self._parcel(failure, earlier or origin))
                if earlier is None:
                    return "parked"
                continue  # an earlier event of the stream was parked: this one can go on
            self._failures.pop(_event_key(envelope), None)
            return outcome

    def _failed_again(self, failure: Failure) -> bool:
        """True when this event failed before with the same error (or has failed three times)."""
        error = str(failure)
        previous, attempts = self._failures.get(failure.key, (None, 0))
        if previous == error or attempts >= 2:
            self._failures.pop(failure.key, None)
            return True
        self._failures[failure.key] = (error, attempts + 1)
        log.warning("%s: could not apply %s (%s); trying again", self.name, failure.key, parking.clean(error, 500))
        return False

    async def apply(self, envelope: Envelope, payload: Payload, *, unpark: bool = False) -> Outcome:
        """Apply one event exactly once. Events missing before it (a gap: lost by a broker that
        restarted empty, say) are read from the source's event store and applied first. Raises
        `Failure` when it (or one of those) cannot be applied. `unpark`: the event was parked; apply
        it now, and resolve it with it."""
        stream_id = subject_uuid(envelope.subject_id)
        async with self.pool.acquire() as conn, conn.transaction():
            key = (envelope.subject_id, str(envelope.source))
            last = (await self._lock_tracking(conn, [key]))[key]
            if envelope.stream_version <= last:
                return "duplicate"
            holes = await parking.holes(
                conn, self.schema, self.name, envelope.source, stream_id, last, envelope.stream_version
            )
            if envelope.stream_version > last + 1:
                await self._fill_gap(conn, envelope, stream_id, last, holes)
            if unpark:
                holes.discard(envelope.stream_version)
            hole = envelope.stream_version in holes
            await self._advance(conn, envelope, payload, skip=hole)
            if unpark:
                await parking.resolve_hole(
                    conn,
                    self.schema,
                    self.name,
                    envelope.source,
                    stream_id,
                    envelope.stream_version,
                    "retried: applied",
                )
        return "parked" if hole else "applied"

    async def apply_together(self, events: Sequence[Event]) -> list[Outcome] | None:
        """Apply events exactly once, in one transaction: one statement to lock and read the tracking of
        every (subject, source) they touch, the projection's batch fold, one statement to move the
        tracking on. None, with nothing applied, when they cannot go together: a gap to fill from a store,
        a parked event in one of their streams, or a fold that failed (an event may be poison): `apply`
        then takes them one at a time. A passing fault (TRANSIENT) is raised."""
        if not events:
            return []
        keys = sorted({(envelope.subject_id, str(envelope.source)) for envelope, _ in events})
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                last = await self._lock_tracking(conn, keys)
                if await parking.any_holes(conn, self.schema, self.name, [(src, subject_uuid(s)) for s, src in keys]):
                    raise _OneAtATime
                outcomes: list[Outcome] = []
                fresh: list[Event] = []
                moved: dict[tuple[str, str], int] = {}  # the streams the fresh events move on, and how far
                for envelope, payload in events:
                    key = (envelope.subject_id, str(envelope.source))
                    if envelope.stream_version <= last[key]:
                        outcomes.append("duplicate")
                        continue
                    if envelope.stream_version != last[key] + 1:
                        raise _OneAtATime  # a gap: filled from the store, one event at a time
                    last[key] = moved[key] = envelope.stream_version
                    fresh.append((envelope, payload))
                    outcomes.append("applied")
                if fresh:
                    try:
                        await self.projection.apply(conn, fresh)
                    except TRANSIENT:
                        raise
                    except Exception as exc:
                        raise _OneAtATime from exc
                    await self._track(conn, moved)
        except _OneAtATime:
            return None
        return outcomes

    async def _lock_tracking(self, conn: asyncpg.Connection, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """Lock the (subject, source) tracking rows, in key order, making the missing ones; their versions.
        An upsert, because a SELECT ... FOR UPDATE locks nothing when a row does not exist yet, and two
        deliveries of a first event (Kafka's and the reconciliation's) both applied it; a concurrent
        insert of the same row waits for this transaction."""
        rows = await conn.fetch(
            f"""INSERT INTO {self.schema}.consumer_applied AS applied (consumer, subject_id, source, last_version)
                SELECT $1, s, src, 0 FROM unnest($2::text[], $3::text[]) AS t(s, src) ORDER BY s, src
                ON CONFLICT (consumer, subject_id, source) DO UPDATE SET last_version = applied.last_version
                RETURNING subject_id, source, last_version""",
            self.name,
            [subject for subject, _ in keys],
            [source for _, source in keys],
        )
        return {(r["subject_id"], r["source"]): r["last_version"] for r in rows}

    async def _track(self, conn: asyncpg.Connection, versions: dict[tuple[str, str], int]) -> None:
        """Move the locked tracking rows on to these versions."""
        await conn.execute(
            f"""UPDATE {self.schema}.consumer_applied AS applied SET last_version = t.v, updated_at = now()
                FROM unnest($2::text[], $3::text[], $4::integer[]) AS t(s, src, v)
                WHERE applied.consumer = $1 AND applied.subject_id = t.s AND applied.source = t.src""",
            self.name,
            [subject for subject, _ in versions],
            [source for _, source in versions],
            list(versions.values()),
        )

    async def _fill_gap(
        self, conn: asyncpg.Connection, envelope: Envelope, stream_id: UUID, last: int, holes: set[int]
    ) -> None:
        if set(range(last + 1, envelope.stream_version)) <= holes:
            return  # only parked events before it: stepped over, not a gap
        rows = await stream_rows(conn, envelope.source, stream_id, last, envelope.stream_version)
        repaired = [r.version for r in rows] == list(range(last + 1, envelope.stream_version))
        log.warning(
            "%s: gap in %s/%s: expected version %d, got %d; %s from the event store",
            self.name,
            envelope.source,
            envelope.subject_id,
            last + 1,
            envelope.stream_version,
            "filled" if repaired else "could NOT be filled",
        )
        await conn.execute(
            f"""INSERT INTO {self.schema}.consumer_gaps
                (consumer, subject_id, source, expected_version, received_version, repaired)
                VALUES ($1, $2, $3, $4, $5, $6)""",
            self.name,
            envelope.subject_id,
            envelope.source,
            last + 1,
            envelope.stream_version,
            repaired,
        )
        for row in rows:
            if row.version in holes:
                continue  # parked for good; the versions after it move the tracking on
            try:
                earlier, payload = read_row(row)
            except ValueError as exc:
                raise Failure(None, row, exc) from exc
            await self._advance(conn, earlier, payload, row=row)

    async def _advance(
        self,
        conn: asyncpg.Connection,
        envelope: Envelope,
        payload: Payload,
        *,
        skip: bool = False,
        row: StoredRow | None = None,
    ) -> None:
        await self._track(conn, {(envelope.subject_id, str(envelope.source)): envelope.stream_version})
        if not skip:  # skip: parked for good, the stream goes on without it
            await self._project(conn, envelope, payload, row)

    async def _project(
        self, conn: asyncpg.Connection, envelope: Envelope, payload: Payload, row: StoredRow | None = None
    ) -> None:
        try:
            await self.projection.apply(conn, [(envelope, payload)])
        except TRANSIENT:
            raise
        except Exception as exc:
            raise Failure(envelope, row, exc) from exc

    async def reset(self) -> None:
        """Forget everything applied: empty the projection, its tracking, its reconcile watermarks,
        and the stored events it had parked (a rebuild tries them again)."""
        async with self.pool.acquire() as conn, conn.transaction():
            for table in ("consumer_applied", "reconcile_position"):
                await conn.execute(f"DELETE FROM {self.schema}.{table} WHERE consumer = $1", self.name)
            await parking.forget_holes(conn, self.schema, self.name)
            await self.projection.reset(conn)

    @asynccontextmanager
    async def exclusively(self) -> AsyncIterator[None]:
        """One pass over the event stores for this read model at a time, across processes: an
        operator's rebuild and a service's own reconciliation running together would both apply from
        the stores while the other resets or moves the watermarks."""
        key = f"ucart.reconcile.{self.schema}.{self.name}"
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
            try:
                yield
            finally:
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    async def rebuild(self, sources: tuple[Source, ...], progress: Callable[[int], None] | None = None) -> int:
        """Empty the read model and apply every event of the stores again; return how many."""
        async with self.exclusively():
            await self.reset()
            return await self._reconcile(sources, REBUILD_BATCH, progress)

    async def reconcile(
        self, sources: tuple[Source, ...], batch: int = 500, progress: Callable[[int], None] | None = None
    ) -> int:
        """Apply, from the source event stores, every event this consumer has not applied yet;
        return how many were applied (parked ones are stepped over and counted apart).

        Kafka is the fast path; this is the safety net that makes the read models converge even
        when the broker lost messages (the embedded broker keeps nothing across a restart). Each
        source's store is read from a watermark kept per consumer, so a pass only reads what is new.
        """
        async with self.exclusively():
            return await self._reconcile(sources, batch, progress)

    async def _reconcile(
        self, sources: tuple[Source, ...], batch: int = 500, progress: Callable[[int], None] | None = None
    ) -> int:
        applied = 0
        for source in sources:
            after = (
                await self.pool.fetchval(
                    f"""SELECT last_notification_id FROM {self.schema}.reconcile_position
                    WHERE consumer = $1 AND source = $2""",
                    self.name,
                    source,
                )
                or 0
            )
            while True:
                async with self.pool.acquire() as conn:
                    rows = await rows_after(conn, source, after, batch)
                if not rows:
                    break
                applied += sum(outcome == "applied" for outcome in await self._reconcile_rows(rows))
                if progress:
                    progress(len(rows))
                after = rows[-1].notification_id
                await self.pool.execute(
                    f"""INSERT INTO {self.schema}.reconcile_position (consumer, source, last_notification_id)
                        VALUES ($1, $2, $3) ON CONFLICT (consumer, source)
                        DO UPDATE SET last_notification_id = EXCLUDED.last_notification_id""",
                    self.name,
                    source,
                    after,
                )
        if applied:
            self.counts["reconciled"] = self.counts.get("reconciled", 0) + applied
        return applied

    async def _reconcile_rows(self, rows: list[StoredRow]) -> list[Outcome]:
        """Stored events, together when they can be (`apply_together`), else one at a time."""
        readable: list[tuple[StoredRow, Event]] = []
        for row in rows:
            try:
                readable.append((row, read_row(row)))
            except ValueError:
                readable = []  # an unreadable row is parked where it stands in its stream: one at a time
                break
        together = await self.apply_together([event for _, event in readable]) if readable else None
        return together if together is not None else [await self._reconcile_row(row) for row in rows]

    async def _reconcile_row(self, row: StoredRow) -> Outcome:
        try:
            envelope, payload = read_row(row)
        except ValueError as exc:  # the bytes will not change: park it now
            return await self._park(await self._parcel(Failure(None, row, exc), row))
        return await self._apply_or_park(envelope, payload, row, retry_now=True)

    async def retry(self, parked: parking.Parked) -> Outcome:
        """Try a parked event again (after a fix). It stays parked, with the new reason, if it still fails."""
        try:
            envelope, payload, origin = await self._reread(parked)
            if parked.in_store and await self._passed(envelope):
                await self._apply_out_of_order(parked, envelope, payload)
                return "applied"
            # Not yet passed by its stream (or not from a store): in order, with what comes before it.
            outcome = await self._apply_or_park(
                envelope, payload, origin, retry_now=True, unpark=parked.in_store, park_itself=False
            )
        except (ValueError, Failure) as exc:
            await parking.still_failing(self.pool, self.schema, parked.id, str(exc))
            return "parked"
        if not parked.in_store:
            await parking.resolve(self.pool, self.schema, parked.id, f"retried: {outcome}")
        return outcome

    async def _reread(self, parked: parking.Parked) -> tuple[Envelope, Payload, Origin]:
        """The parked event as its store holds it now, or the message as it came."""
        if not parked.in_store:  # verified again, with the keys configured now
            origin = KafkaOrigin(
                parked.topic or "",
                parked.kafka_partition or 0,
                parked.kafka_offset or 0,
                parked.body,
                key_id=parked.key_id,
                signature=parked.signature,
            )
            return *self._read(origin), origin
        assert parked.source and parked.stream_id and parked.stream_version
        async with self.pool.acquire() as conn:
            rows = await stream_rows(
                conn,
                source_named(parked.source),
                parked.stream_id,
                parked.stream_version - 1,
                parked.stream_version + 1,
            )
        if not rows:
            raise ValueError("the event is no longer in its store")
        return *read_row(rows[0]), rows[0]

    async def _passed(self, envelope: Envelope) -> bool:
        last = (
            await self.pool.fetchval(
                f"""SELECT last_version FROM {self.schema}.consumer_applied
                WHERE consumer = $1 AND subject_id = $2 AND source = $3""",
                self.name,
                envelope.subject_id,
                envelope.source,
            )
            or 0
        )
        return last >= envelope.stream_version

    async def _apply_out_of_order(self, parked: parking.Parked, envelope: Envelope, payload: Payload) -> None:
        """The stream went on without the event: apply it now, where the read model stands."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self._project(conn, envelope, payload)
            await parking.resolve(conn, self.schema, parked.id, "applied after its stream went on")

    async def _parcel(self, failure: Failure, origin: Origin) -> parking.Parcel:
        """What to park: the stored row (in_store), or the message as it came from Kafka (in_store only
        if it is exactly the event its source's store holds)."""
        envelope = failure.envelope
        if isinstance(origin, StoredRow):
            row: StoredRow | None = origin
            parcel = parking.Parcel(body=origin.state, reason=str(failure))
        else:
            row = await self._stored_copy(envelope) if envelope else None
            parcel = origin.parcel(str(failure))
        if envelope is not None:
            parcel = replace(
                parcel,
                subject_id=envelope.subject_id,
                event_id=envelope.event_id,
                event_type=envelope.event_type,
                source=envelope.source,
                stream_id=subject_uuid(envelope.subject_id),
                stream_version=envelope.stream_version,
            )
        if row is not None:
            parcel = replace(
                parcel,
                in_store=True,
                source=row.source,
                stream_id=row.stream_id,
                stream_version=row.version,
                notification_id=row.notification_id,
            )
        return parcel

    async def _stored_copy(self, envelope: Envelope) -> StoredRow | None:
        """The store's row for this event, if the message is exactly that event."""
        async with self.pool.acquire() as conn:
            rows = await stream_rows(
                conn,
                envelope.source,
                subject_uuid(envelope.subject_id),
                envelope.stream_version - 1,
                envelope.stream_version + 1,
            )
        for row in rows:
            try:
                if row.envelope() == envelope:
                    return row
            except Exception:  # an unreadable row is not this message
                return None
        return None

    async def _park(self, parcel: parking.Parcel, key: bytes | None = None) -> Outcome:
        parked_id = await parking.park(self.pool, self.schema, self.name, parcel)
        if parked_id is None:
            return "parked"  # that stored event was already parked
        log.error(
            "%s: parked event %s (%s/%s v%s): %s",
            self.name,
            parked_id,
            parcel.source,
            parcel.subject_id,
            parcel.stream_version,
            parking.clean(parcel.reason, 500),
        )
        if self.dead_letter is not None:
            try:
                key = key or (parcel.subject_id.encode() if parcel.subject_id else None)
                await self.dead_letter(parcel, key, _dead_letter_headers(parcel))
            except Exception as exc:  # the row keeps it; the topic copy is for outside eyes
                log.warning(
                    "%s: could not copy parked event %s to the dead-letter topic: %s", self.name, parked_id, exc
                )
        return "parked"


def _dead_letter_headers(parcel: parking.Parcel) -> dict[str, str]:
    headers = {"dead_letter_reason": parking.clean(parcel.reason, 1000)}
    if parcel.topic is not None:
        headers.update(
            original_topic=parcel.topic,
            original_partition=str(parcel.kafka_partition),
            original_offset=str(parcel.kafka_offset),
        )
    if parcel.notification_id is not None:
        headers.update(original_source=str(parcel.source), original_notification_id=str(parcel.notification_id))
    if parcel.event_id is not None:
        headers.update(event_id=str(parcel.event_id), event_type=parking.clean(parcel.event_type or "", 200))
    # The signature it came with, so that outside eyes can tell a forgery from a genuine message.
    for name, value in (("original_key_id", parcel.key_id), ("original_signature", parcel.signature)):
        if value is not None:
            headers[name] = parking.clean(value, 200)
    return headers


class Handler(Protocol):
    """What a subscription delivers messages to (an IdempotentConsumer)."""

    @property
    def name(self) -> str: ...

    async def handle(self, message: KafkaMessage) -> object: ...


def subscribe(
    broker: KafkaBroker,
    consumer: Handler,
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
        # Batches: what the broker has (up to max_records) is applied in one transaction; with nothing to
        # read, the subscriber waits batch_timeout_ms for a record, then as long again before it asks anew.
        batch=True,
        max_records=BATCH,
        batch_timeout_ms=BATCH_WAIT_MS,
        title=f"{consumer.name}:consume",
        description=f"{consumer.name}: verifies each message's signature (headers key_id, signature) and "
        "applies each event once (tracked per subject, source and stream_version). Messages that do not "
        f"verify or cannot be processed go to {dead_letter_topic}.",
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
        description=f"Events {consumer} could never apply (the message as received, or the stored event), "
        "parked with the reason; headers dead_letter_reason, and original_topic, original_partition, "
        "original_offset (with original_key_id, original_signature: the signature it came with, if any) or "
        "original_source, original_notification_id.",
    )

    async def dead_letter(parcel: parking.Parcel, key: bytes | None, headers: dict[str, str]) -> None:
        await publisher.publish(parcel.body, key=key, headers=headers)

    return dead_letter


async def rebuild_if_outdated(consumer: IdempotentConsumer, sources: tuple[Source, ...], version: str) -> int | None:
    """Rebuild the consumer's projection from the event stores when its stored version differs
    from the code's; return how many events were applied (None when it was up to date). Runs before
    the consumer starts; events committed meanwhile arrive from Kafka and are applied after."""
    pool, table = consumer.pool, f"{consumer.schema}.projection_versions"
    if await pool.fetchval(f"SELECT version FROM {table} WHERE projection = $1", consumer.name) == version:
        return None
    log.warning("%s: read model version %s is new; rebuilding it from the event stores", consumer.name, version)
    applied = await consumer.rebuild(sources)
    await pool.execute(
        f"""INSERT INTO {table} (projection, version) VALUES ($1, $2)
                           ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version""",
        consumer.name,
        version,
    )
    log.warning("%s: rebuilt from %d events", consumer.name, applied)
    return applied
