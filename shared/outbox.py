"""Outbox relay: publishes a service's committed events to its Kafka topic, in order.

The service's notification log in PostgreSQL *is* the outbox: a command succeeds once its events are
committed there, whether Kafka is up or not. The relay reads the log after its saved position,
publishes each event keyed by subject id, and only then advances the position (at-least-once: a
crash between the two republishes a batch, and consumers drop the copies). One relay per service
publishes at a time, guarded by a PostgreSQL advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import asyncpg

from shared.contract.envelope import Envelope
from shared.eventstore.application import SubjectApplication, to_envelope

log = logging.getLogger(__name__)

class Acknowledged(Protocol):
    """What the broker answered (aiokafka's RecordMetadata)."""

    partition: int
    offset: int


Publish = Callable[[Envelope], Awaitable[Acknowledged]]
Prepare = Callable[[], Awaitable[None]]


async def _nothing_to_prepare() -> None:
    return None


class BrokerWasReset(RuntimeError):
    pass


class OutboxRelay:
    def __init__(
        self,
        app: SubjectApplication,
        pool: asyncpg.Pool,
        publish: Publish,
        *,
        schema: str,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        prepare: Prepare = _nothing_to_prepare,
    ):
        self.app = app
        self.pool = pool
        self.publish = publish
        self.schema = schema
        self.name = f"{app.name}-relay"
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        # Runs before publishing, and again after every failure: the embedded broker comes back
        # from a restart with no topics, and silently drops a produce to a topic it has not yet
        # re-created, so the topics must exist before anything is sent.
        self.prepare = prepare
        self._offsets: dict[int, int] = {}  # partition -> last offset the broker acknowledged
        self.published = 0  # since start, for metrics and tests
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
        """Publish one batch after the saved position; return how many events went out."""
        start = await self.position()
        notifications = await asyncio.to_thread(
            self.app.recorder.select_notifications, start + 1, self.batch_size
        )
        for notification in notifications:
            domain_event = self.app.mapper.to_domain_event(notification)
            ack = await self.publish(to_envelope(domain_event, self.app.source))
            self._check_not_reset(ack)
            self.published += 1
        if notifications:
            await self.pool.execute(
                f"""INSERT INTO {self.schema}.outbox_position (relay, last_notification_id) VALUES ($1, $2)
                    ON CONFLICT (relay) DO UPDATE SET last_notification_id = EXCLUDED.last_notification_id,
                                                      updated_at = now()""",
                self.name,
                notifications[-1].id,
            )
        return len(notifications)

    def _check_not_reset(self, ack: Acknowledged) -> None:
        """Offsets only grow on a broker that kept its data. One that went back means the broker
        restarted empty, and a memory-only broker acknowledges, then drops, writes to a topic it no
        longer has: publish the batch again once the topic exists (consumers drop the copies)."""
        last = self._offsets.get(ack.partition, -1)
        if ack.offset <= last:
            raise BrokerWasReset(f"partition {ack.partition} offset went back from {last} to {ack.offset}")
        self._offsets[ack.partition] = ack.offset

    async def lag(self) -> int:
        """Events committed but not yet published."""
        latest = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
        return max(0, latest - await self.position())

    async def run(self) -> None:
        """Relay until stopped: take the leadership lock, then publish whenever there is something new."""
        while not self._stopping.is_set():
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # broker or database down: keep the position, retry later
                log.warning("%s paused: %s; retrying", self.name, exc)
                await asyncio.sleep(min(5.0, self.poll_seconds * 2))

    async def _lead(self) -> None:
        conn: asyncpg.Connection = await self.pool.acquire()
        channel = f"{self.app.name}_events"  # eventsourcing NOTIFYs on its table's name at every insert
        try:
            while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self.name):
                await asyncio.sleep(self.poll_seconds)
            await self.prepare()
            self._offsets.clear()
            await conn.add_listener(channel, self._on_notify)
            try:
                while not self._stopping.is_set():
                    while await self.publish_pending() == self.batch_size and not self._stopping.is_set():
                        pass
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.poll_seconds)
                    except TimeoutError:
                        pass
                    self._wake.clear()
            finally:
                await conn.remove_listener(channel, self._on_notify)
        finally:
            await self.pool.release(conn)  # asyncpg resets a released connection: unlock_all, UNLISTEN *

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def stop(self, task: asyncio.Task, timeout: float = 5.0) -> None:
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
