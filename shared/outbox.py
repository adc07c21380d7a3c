"""Outbox relay: publishes a service's committed events to its Kafka topic, in order.

The service's notification log in PostgreSQL *is* the outbox: a command succeeds once its events are
committed there, whether Kafka is up or not. The relay reads the log after its saved position,
publishes each event keyed by subject id, and only then advances the position (at-least-once: a
crash between the two republishes a batch, and consumers drop the copies). One relay per service
publishes at a time, guarded by a PostgreSQL advisory lock.

After a failed send the relay saves the position of what the broker already acknowledged, and waits
longer after each failure in a row (`backoff`) before it resumes from there: a broker that refuses
one event is not sent the rest of the batch again and again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from uuid import UUID

import asyncpg
from eventsourcing.persistence import Notification

from shared import parking
from shared.contract.envelope import Envelope
from shared.eventstore.application import SubjectApplication
from shared.eventstore.decoding import decode

log = logging.getLogger(__name__)


class Acknowledged(Protocol):
    """What the broker answered (aiokafka's RecordMetadata)."""

    partition: int
    offset: int


# Send one event: it is queued for the broker, in the order of the calls, and the broker's answer comes
# later (aiokafka's send(): the producer batches what is queued, and keeps each partition's order).
Publish = Callable[[Envelope], Awaitable["asyncio.Future[Acknowledged]"]]
Prepare = Callable[[], Awaitable[None]]


def _forget(answers: list[tuple[int, asyncio.Future[Acknowledged] | None]]) -> None:
    """Answers no longer waited for: their errors are retrieved (not reported as never retrieved)."""
    for _, answer in answers:
        if answer is not None:
            answer.add_done_callback(lambda f: f.cancelled() or f.exception())


async def _nothing_to_prepare() -> None:
    return None


class BrokerWasReset(RuntimeError):
    pass


def backoff(failures: int, base: float, cap: float, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the `failures`-th failure in a row: doubling from `base` up to `cap`, the
    upper half random, so that relays that failed together do not retry in step."""
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 32))
    return ceiling / 2 + rand() * ceiling / 2


class OutboxRelay:
    def __init__(
        self,
        app: SubjectApplication[Any],
        pool: asyncpg.Pool,
        publish: Publish,
        *,
        schema: str,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        prepare: Prepare = _nothing_to_prepare,
        one_at_a_time: bool = False,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
    ):
        self.app = app
        self.pool = pool
        self.publish = publish
        self.schema = schema
        self.name = f"{app.name}-relay"
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        # Runs before publishing, and again after every failure: Tansu comes back from a restart
        # with no topics, and silently drops a produce to a topic it has not yet re-created, so the
        # topics must exist before anything is sent (a broker that keeps its log needs nothing here).
        self.prepare = prepare
        # Tansu reports a partition's end offset from the last record batch's first offset, so events
        # sent together would look missing to a reader that reads up to the end offsets: one at a time there.
        self.one_at_a_time = one_at_a_time
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self._offsets: dict[int, int] = {}  # partition -> last offset the broker acknowledged
        self._attempted = 0  # the highest notification id this relay has tried to send
        # Since start, for metrics, /ready and tests:
        self.published = 0  # events the broker acknowledged
        self.republished = 0  # events sent again, after a failure or a broker reset
        self.errors = 0  # failed attempts
        self.failures = 0  # failed attempts since the last batch that went out whole
        self.failing_since: float | None = None  # monotonic time of the first of those failures
        self.last_error = ""
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def nudge(self) -> None:
        """Tell the relay there is something new (it also polls)."""
        self._wake.set()

    async def position(self) -> int:
        value = await self.pool.fetchval(
            f"SELECT last_notification_id FROM {self.schema}.outbox_position WHERE relay = $1", self.name
        )
        return value or 0

    async def publish_pending(self) -> int:
        """Publish one batch after the saved position; return how many events went out. The whole batch
        is queued at once, then the broker's answers are taken in order. If a send fails, the position is
        saved after the events the broker acknowledged before it."""
        start = await self.position()
        notifications = await asyncio.to_thread(self.app.recorder.select_notifications, start + 1, self.batch_size)
        answers: list[tuple[int, asyncio.Future[Acknowledged] | None]] = []  # None: parked, not sent
        failure: Exception | None = None
        try:
            for notification in notifications:
                if notification.id <= self._attempted:
                    self.republished += 1
                self._attempted = max(self._attempted, notification.id)
                answer = await self._send(notification)
                answers.append((notification.id, answer))
                if self.one_at_a_time and answer is not None:
                    await asyncio.wait((answer,))
                    if answer.cancelled() or answer.exception() is not None:
                        break  # the rest of the batch waits for the next attempt
        except Exception as exc:
            failure = exc  # what was queued before it may still be acknowledged
        # BrokerWasReset goes up from here: the whole batch goes again (the restarted broker dropped it).
        acknowledged, refused = await self._answers(answers)
        if (error := refused or failure) is not None:
            if acknowledged is not None:
                await self._save_position(acknowledged)
            raise error
        if notifications:
            await self._save_position(notifications[-1].id)
        self._not_failing()
        return len(notifications)

    async def _send(self, notification: Notification) -> asyncio.Future[Acknowledged] | None:
        try:
            envelope, _ = decode(self.app.mapper, self.app.source, notification.originator_version, notification.state)
        except Exception as exc:  # a row no code can read (written behind the application's back)
            await self._park(notification, exc)
            return None
        return await self.publish(envelope)

    async def _answers(
        self, answers: list[tuple[int, asyncio.Future[Acknowledged] | None]]
    ) -> tuple[int | None, Exception | None]:
        """The broker's answers, in the order sent: the last notification acknowledged with every one
        before it, and the first refusal."""
        acknowledged = None
        for i, (notification_id, answer) in enumerate(answers):
            if answer is not None:
                try:
                    self._check_not_reset(await answer)
                except Exception as exc:
                    _forget(answers[i + 1 :])
                    if isinstance(exc, BrokerWasReset):
                        raise
                    return acknowledged, exc
                self.published += 1
            acknowledged = notification_id
        return acknowledged, None

    async def _park(self, notification: Notification, exc: Exception) -> None:
        """Set an unreadable stored event aside (reported by /ready and `ucart parked list`) rather
        than stop publishing the service's events at it."""
        reason = f"stored event cannot be read: {type(exc).__name__}: {exc}"
        await parking.park(
            self.pool,
            self.schema,
            self.name,
            parking.Parcel(
                body=bytes(notification.state),
                reason=reason,
                in_store=True,
                source=self.app.source,
                stream_id=UUID(str(notification.originator_id)),
                stream_version=notification.originator_version,
                notification_id=notification.id,
            ),
        )
        log.error(
            "%s: parked notification %d, not published: %s", self.name, notification.id, parking.clean(reason, 500)
        )

    async def _save_position(self, notification_id: int) -> None:
        await self.pool.execute(
            f"""INSERT INTO {self.schema}.outbox_position (relay, last_notification_id) VALUES ($1, $2)
                ON CONFLICT (relay) DO UPDATE SET last_notification_id = EXCLUDED.last_notification_id,
                                                  updated_at = now()""",
            self.name,
            notification_id,
        )

    def _check_not_reset(self, ack: Acknowledged) -> None:
        """Offsets only grow on a broker that kept its data. One that went back means the broker
        restarted empty, and a memory-only broker acknowledges, then drops, writes to a topic it no
        longer has: publish the batch again once the topic exists (consumers drop the copies).
        Harmless on Apache Kafka, whose offsets never go back (unless a topic was deleted and
        re-created: sending the batch again is right then too).
        The offsets are kept across failures: a broker that came back empty while the relay was
        failing is noticed at its first answer."""
        last = self._offsets.get(ack.partition, -1)
        if ack.offset <= last:
            self._offsets.clear()  # the restarted broker's offsets are the ones to compare with now
            raise BrokerWasReset(f"partition {ack.partition} offset went back from {last} to {ack.offset}")
        self._offsets[ack.partition] = ack.offset

    async def lag(self) -> int:
        """Events committed but not yet published."""
        latest = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
        return max(0, latest - await self.position())

    def failing_for(self) -> float:
        """How long the relay has been failing without a break (0 while it publishes, or has nothing to)."""
        return 0.0 if self.failing_since is None else time.monotonic() - self.failing_since

    async def run(self) -> None:
        """Relay until stopped: take the leadership lock, then publish whenever there is something new."""
        while not self._stopping.is_set():
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database down: keep the position, retry later
                delay = self._failed(exc)
                log.warning("%s paused: %s; retrying in %.1f s", self.name, self.last_error, delay)
                with contextlib.suppress(TimeoutError):  # the delay passed: try again
                    await asyncio.wait_for(self._stopping.wait(), delay)

    def _failed(self, exc: Exception) -> float:
        """Count the failure; return how long to wait before trying again."""
        self.errors += 1
        self.failures += 1
        name, text = type(exc).__name__, str(exc)
        self.last_error = text if text.startswith(name) else f"{name}: {text}" if text else name
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        return backoff(self.failures, self.backoff_base, self.backoff_cap)

    def _not_failing(self) -> None:
        self.failures, self.failing_since = 0, None

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await self.pool.acquire()
        channel = f"{self.app.name}_events"  # eventsourcing NOTIFYs on its table's name at every insert
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.name):
                self._not_failing()  # another relay publishes; this one has nothing to fail at
                await asyncio.sleep(self.poll_seconds)
            await self.prepare()
            await conn.add_listener(channel, self._on_notify)
            try:
                while not self._stopping.is_set():
                    while await self.publish_pending() == self.batch_size and not self._stopping.is_set():
                        pass
                    with contextlib.suppress(TimeoutError):  # nothing new: poll anyway
                        await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                    self._wake.clear()
            finally:
                await conn.remove_listener(channel, self._on_notify)
        finally:
            await self.pool.release(conn)  # asyncpg resets a released connection: unlock_all, UNLISTEN *

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def stop(self, task: asyncio.Task[None], timeout: float = 5.0) -> None:
        """Graceful stop: the batch in flight is published and its position saved, then `task` (the
        one running `run()`) ends. Past `timeout` it is cancelled: at worst that batch goes out again."""
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
        except Exception:  # the relay's own failure was logged; shutting down anyway
            pass
