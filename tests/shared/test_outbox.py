"""The outbox relay against real PostgreSQL and a real broker: order, restarts, one leader."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from support import read_topic

from services.enrollment.app import EnrollmentApplication
from shared import db, facts
from shared.consumer import IdempotentConsumer
from shared.contract.envelope import Envelope, RecordedBy
from shared.contract.events import ConsentWithdrawn, Enrolled
from shared.contract.topics import topic_for
from shared.eventstore import EventMeta
from shared.eventstore.application import postgres_env
from shared.config import Settings
from shared.outbox import OutboxRelay
from shared.service import ensure_topics

SUBJECTS = [f"UCT-09-{n:03d}" for n in range(1, 13)]
WITHDRAWN = SUBJECTS[::3]  # 4 subjects get a second event


def meta(subject: str, days_ago: int) -> EventMeta:
    return EventMeta(subject_id=subject, occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
                     recorded_by=RecordedBy(user_id="relay-test", role="coordinator"), protocol_version="test@1")


class Crash(Exception):
    pass


@pytest.fixture
async def store(database_url):
    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("enrollment") + facts.ddl("enrollment"))
    app = await asyncio.to_thread(EnrollmentApplication, postgres_env(database_url, "enrollment"))
    for subject in SUBJECTS:
        enrolled = Enrolled(site_id="09", consent_signed_on=(datetime.now(UTC) - timedelta(days=9)).date(),
                            year_of_birth=1970, sex="M", disease_status="relapsed", cd19_positive=True)
        await asyncio.to_thread(app.enrol, meta(subject, 8), enrolled)
    for subject in WITHDRAWN:
        await asyncio.to_thread(app.withdraw, meta(subject, 2), ConsentWithdrawn(withdrawal_reason="test"), None)
    yield app, pool
    await pool.close()
    app.close()


@pytest.fixture
async def producer(bootstrap_servers):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


def publisher(producer: AIOKafkaProducer, topic: str, crash_after: int | None = None):
    sent = 0

    async def publish(envelope: Envelope) -> None:
        nonlocal sent
        if crash_after is not None and sent == crash_after:
            raise Crash("relay process died mid-batch")
        ack = await producer.send_and_wait(topic, envelope.model_dump_json().encode(), key=envelope.kafka_key())
        sent += 1
        return ack

    return publish


async def until_caught_up(relay: OutboxRelay, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while await relay.lag():
            await asyncio.sleep(0.1)


async def test_relay_restarted_midway_republishes_at_most_once_more(store, producer, bootstrap_servers, topic_prefix):
    app, pool = store
    topic = topic_for("enrollment", topic_prefix)
    total = len(SUBJECTS) + len(WITHDRAWN)

    first = OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", batch_size=5)
    assert await first.publish_pending() == 5
    assert await first.position() > 0 and await first.lag() == total - 5

    crashing = OutboxRelay(app, pool, publisher(producer, topic, crash_after=2), schema="enrollment", batch_size=5)
    with pytest.raises(Crash):
        await crashing.publish_pending()  # 2 published, position not advanced

    restarted = OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", batch_size=5,
                            poll_seconds=0.1)
    task = asyncio.create_task(restarted.run())
    await until_caught_up(restarted)
    task.cancel()

    messages = await read_topic(bootstrap_servers, topic, total + 2)
    copies = Counter(m.event_id for m in messages)
    assert len(copies) == total and sum(copies.values()) == total + 2
    assert max(copies.values()) == 2  # exactly the two events of the crashed batch were sent twice

    # Per subject, first appearances are in stream order.
    seen: dict[str, list[int]] = {}
    for m in messages:
        versions = seen.setdefault(m.subject_id, [])
        if m.stream_version not in versions:
            versions.append(m.stream_version)
    assert all(v == sorted(v) for v in seen.values())

    # A consumer fed the duplicated stream ends in the state the store describes.
    await pool.execute("CREATE SCHEMA IF NOT EXISTS replica;" + db.plumbing_ddl("replica") + facts.ddl("replica"))
    consumer = IdempotentConsumer(facts.SubjectFactsProjection("replica"), pool, schema="replica",
                                  dead_letter=None)  # type: ignore[arg-type]
    outcomes = Counter([await consumer.apply(m, m.typed_payload()) for m in messages])
    assert outcomes == {"applied": total, "duplicate": 2}
    rows = {r["subject_id"]: r for r in await pool.fetch("SELECT * FROM replica.subject_facts")}
    assert set(rows) == set(SUBJECTS)
    assert {s for s, r in rows.items() if r["withdrawn_on"]} == set(WITHDRAWN)


async def test_only_one_relay_publishes_at_a_time(store, producer, bootstrap_servers, topic_prefix):
    app, pool = store
    topic = topic_for("enrollment", topic_prefix)
    relays = [OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", poll_seconds=0.1)
              for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    await until_caught_up(relays[0])
    await asyncio.sleep(0.5)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    total = len(SUBJECTS) + len(WITHDRAWN)
    assert sorted(r.published for r in relays) == [0, total]
    messages = await read_topic(bootstrap_servers, topic, total + 1, timeout=5)
    assert len(messages) == total


async def test_new_events_are_published_promptly_after_commit(store, producer, bootstrap_servers, topic_prefix):
    app, pool = store
    topic = topic_for("enrollment", topic_prefix)
    relay = OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", poll_seconds=30)
    task = asyncio.create_task(relay.run())
    await until_caught_up(relay)
    late = Enrolled(site_id="09", consent_signed_on=datetime.now(UTC).date() - timedelta(days=1),
                    year_of_birth=1990, sex="F", disease_status="refractory", cd19_positive=True)
    await asyncio.to_thread(app.enrol, meta("UCT-09-099", 0), late)
    # The poll interval is 30 s: only PostgreSQL's NOTIFY can wake the relay this fast.
    await until_caught_up(relay, timeout=5)
    task.cancel()
    messages = await read_topic(bootstrap_servers, topic, len(SUBJECTS) + len(WITHDRAWN) + 1)
    assert "UCT-09-099" in {m.subject_id for m in messages}


async def test_commands_commit_while_the_broker_is_down_and_the_relay_catches_up(store, tmp_path, topic_prefix):
    from infra.embedded import EmbeddedKafka, free_port

    app, pool = store
    broker = EmbeddedKafka(free_port(), tmp_path / "broker.log")
    broker.start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", request_timeout_ms=2000)
    await producer.start()
    topic = topic_for("enrollment", topic_prefix)
    settings = Settings(_env_file=None, kafka_bootstrap_servers=broker.bootstrap_servers)
    relay = OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", poll_seconds=0.2,
                        prepare=lambda: ensure_topics(settings, [topic]))
    task = asyncio.create_task(relay.run())
    try:
        await until_caught_up(relay)
        broker.kill()  # memory only: every topic and offset is gone
        late = [f"UCT-09-2{n:02d}" for n in range(3)]
        for subject in late:  # the write side does not need Kafka
            enrolled = Enrolled(site_id="09", consent_signed_on=datetime.now(UTC).date() - timedelta(days=2),
                                year_of_birth=1980, sex="U", disease_status="relapsed", cd19_positive=True)
            await asyncio.to_thread(app.enrol, meta(subject, 1), enrolled)
        await asyncio.sleep(1)
        assert await relay.lag() == len(late)
        broker.start()
        await until_caught_up(relay, timeout=60)
        messages = await read_topic(broker.bootstrap_servers, topic, len(late))
        assert {m.subject_id for m in messages} == set(late)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await producer.stop()
        broker.stop()


async def test_a_stopped_relay_finishes_its_batch_and_saves_its_position(store, producer, topic_prefix):
    app, pool = store
    topic = topic_for("enrollment", topic_prefix)
    gate = asyncio.Event()
    send = publisher(producer, topic)

    async def slow_publish(envelope: Envelope):
        await gate.wait()  # hold the batch in flight until stop() has been asked for
        return await send(envelope)

    relay = OutboxRelay(app, pool, slow_publish, schema="enrollment", batch_size=100, poll_seconds=0.1)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)
    stopping = asyncio.create_task(relay.stop(task, timeout=10))
    await asyncio.sleep(0.2)
    gate.set()
    await stopping
    assert task.done() and not task.cancelled()
    assert await relay.lag() == 0 and relay.published == len(SUBJECTS) + len(WITHDRAWN)
