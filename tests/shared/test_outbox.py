"""The outbox relay against real PostgreSQL and a real broker: order, restarts, one leader, backoff."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from aiokafka import AIOKafkaProducer

from services.enrollment import domain
from services.enrollment.domain import EnrollmentSubject
from shared import db, facts, parking
from shared.config import Settings
from shared.consumer import IdempotentConsumer
from shared.contract.envelope import Envelope, RecordedBy
from shared.contract.events import ConsentWithdrawn, Enrolled
from shared.contract.topics import topic_for
from shared.eventstore import EventMeta
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.outbox import OutboxRelay, backoff
from shared.protocol import load_protocol
from shared.service import ensure_topics
from shared.signing import Verifier
from support import read_topic

SUBJECTS = [f"UCT-09-{n:03d}" for n in range(1, 13)]
WITHDRAWN = SUBJECTS[::3]  # 4 subjects get a second event

PROTOCOL = load_protocol()


def meta(subject: str, days_ago: int) -> EventMeta:
    return EventMeta(
        subject_id=subject,
        occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
        recorded_by=RecordedBy(user_id="relay-test", role="coordinator"),
        protocol_version="test@1",
    )


class Crash(Exception):
    pass


class Died(BaseException):
    """The relay's process died: nothing after the send runs (unlike after an error it catches)."""


@pytest.fixture
async def store(database_url):
    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("enrollment") + facts.ddl("enrollment"))
    app = await asyncio.to_thread(
        SubjectApplication, EnrollmentSubject, "enrollment", postgres_env(database_url, "enrollment")
    )
    for subject in SUBJECTS:
        enrolled = Enrolled(
            site_id="09",
            consent_signed_on=(datetime.now(UTC) - timedelta(days=9)).date(),
            year_of_birth=1970,
            sex="M",
            disease_status="relapsed",
            cd19_positive=True,
        )
        await asyncio.to_thread(app.record, partial(domain.enrol, protocol=PROTOCOL), meta(subject, 8), enrolled)
    for subject in WITHDRAWN:
        await asyncio.to_thread(
            app.record,
            partial(domain.withdraw, facts=None),
            meta(subject, 2),
            ConsentWithdrawn(withdrawal_reason="test"),
        )
    yield app, pool
    await pool.close()
    app.close()


@pytest.fixture(autouse=True)
async def declared(bootstrap_servers, topic_prefix) -> None:
    """The topic, declared up front as a service does (no client creates one)."""
    settings = Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers)
    await ensure_topics(settings, [topic_for("enrollment", topic_prefix)])


@pytest.fixture
async def producer(bootstrap_servers):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all")
    await producer.start()
    yield producer
    await producer.stop()


def publisher(producer: AIOKafkaProducer, topic: str, crash_after: int | None = None):
    sent = 0

    async def publish(envelope: Envelope) -> asyncio.Future:
        nonlocal sent
        if crash_after is not None and sent == crash_after:
            raise Died("relay process died mid-batch")
        answer = await producer.send(topic, envelope.model_dump_json().encode(), key=envelope.kafka_key())
        sent += 1
        return answer

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
    with pytest.raises(Died):
        await crashing.publish_pending()  # 2 published, position not advanced

    restarted = OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", batch_size=5, poll_seconds=0.1)
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
    consumer = IdempotentConsumer(
        facts.SubjectFactsProjection("replica"),
        pool,
        schema="replica",
        verifier=Verifier({}),  # fed envelopes directly: nothing to verify
    )
    outcomes = Counter([await consumer.apply(m, m.typed_payload()) for m in messages])
    assert outcomes == {"applied": total, "duplicate": 2}
    rows = {r["subject_id"]: r for r in await pool.fetch("SELECT * FROM replica.subject_facts")}
    assert set(rows) == set(SUBJECTS)
    assert {s for s, r in rows.items() if r["withdrawn_on"]} == set(WITHDRAWN)


async def test_only_one_relay_publishes_at_a_time(store, producer, bootstrap_servers, topic_prefix):
    app, pool = store
    topic = topic_for("enrollment", topic_prefix)
    relays = [
        OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment", poll_seconds=0.1) for _ in range(2)
    ]
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
    late = Enrolled(
        site_id="09",
        consent_signed_on=datetime.now(UTC).date() - timedelta(days=1),
        year_of_birth=1990,
        sex="F",
        disease_status="refractory",
        cd19_positive=True,
    )
    await asyncio.to_thread(app.record, partial(domain.enrol, protocol=PROTOCOL), meta("UCT-09-099", 0), late)
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
    relay = OutboxRelay(
        app,
        pool,
        publisher(producer, topic),
        schema="enrollment",
        poll_seconds=0.2,
        prepare=lambda: ensure_topics(settings, [topic]),
    )
    task = asyncio.create_task(relay.run())
    try:
        await until_caught_up(relay)
        broker.kill()  # memory only: every topic and offset is gone
        late = [f"UCT-09-2{n:02d}" for n in range(3)]
        for subject in late:  # the write side does not need Kafka
            enrolled = Enrolled(
                site_id="09",
                consent_signed_on=datetime.now(UTC).date() - timedelta(days=2),
                year_of_birth=1980,
                sex="U",
                disease_status="relapsed",
                cd19_positive=True,
            )
            await asyncio.to_thread(app.record, partial(domain.enrol, protocol=PROTOCOL), meta(subject, 1), enrolled)
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


def test_backoff_grows_is_bounded_and_jittered():
    base, cap = 0.5, 10.0
    lowest = [backoff(n, base, cap, rand=lambda: 0.0) for n in range(1, 12)]
    highest = [backoff(n, base, cap, rand=lambda: 1.0) for n in range(1, 12)]
    assert lowest[:6] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0]  # doubles, then stays at half the cap
    assert all(a <= b for a, b in itertools.pairwise(lowest))
    assert highest[0] == base and max(highest) == cap == backoff(10_000, base, cap, rand=lambda: 1.0)
    draws = [backoff(3, base, cap) for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in draws) and len(set(draws)) > 150  # spread over the upper half


@dataclass
class Ack:
    partition: int
    offset: int


def answered(ack: Ack) -> asyncio.Future:
    """A broker's answer that has come already."""
    answer = asyncio.get_running_loop().create_future()
    answer.set_result(ack)
    return answer


async def test_a_failed_send_resumes_after_what_the_broker_acknowledged(
    store, producer, bootstrap_servers, topic_prefix
):
    app, pool = store
    topic = topic_for("enrollment", topic_prefix)
    total = len(SUBJECTS) + len(WITHDRAWN)
    send = publisher(producer, topic)
    attempts: Counter = Counter()

    async def refuses_the_fourth_once(envelope: Envelope):
        attempts[envelope.event_id] += 1
        if len(attempts) == 4 and attempts[envelope.event_id] == 1:
            raise Crash("the broker refused the 4th event")
        return await send(envelope)

    relay = OutboxRelay(app, pool, refuses_the_fourth_once, schema="enrollment", batch_size=10)
    with pytest.raises(Crash):
        await relay.publish_pending()
    assert await relay.lag() == total - 3  # the 3 events the broker acknowledged are behind the position
    while await relay.publish_pending():
        pass
    assert sorted(attempts.values()) == [1] * (total - 1) + [2] and relay.republished == 1
    messages = await read_topic(bootstrap_servers, topic, total)
    assert len({m.event_id for m in messages}) == len(messages) == total  # none twice, none missing


async def test_a_broker_reset_sends_the_whole_batch_again(store):
    app, pool = store
    total = len(SUBJECTS) + len(WITHDRAWN)
    sent: list = []

    async def restarts_empty_after_the_third(envelope: Envelope):
        sent.append(envelope.event_id)
        offset = len(sent) - 1 if len(sent) <= 3 else len(sent) - 4  # the 4th goes to an empty broker
        return answered(Ack(partition=0, offset=offset))

    relay = OutboxRelay(
        app,
        pool,
        restarts_empty_after_the_third,
        schema="enrollment",
        batch_size=5,
        poll_seconds=0.05,
        backoff_base=0.02,
    )
    task = asyncio.create_task(relay.run())
    await until_caught_up(relay)
    await relay.stop(task)
    # The batch of 5 was sent at once; not only what followed the acknowledged prefix goes again: the
    # restarted broker may have dropped all of it.
    assert sent[:5] == sent[5:10] and len(sent) == total + 5
    assert relay.republished == 5 and relay.errors == 1


async def test_a_failing_relay_backs_off_and_never_resends_what_was_acknowledged(store):
    app, pool = store
    total = len(SUBJECTS) + len(WITHDRAWN)
    attempts: Counter = Counter()
    refusing = True

    async def refuses_the_third(envelope: Envelope):
        attempts[envelope.event_id] += 1
        if len(attempts) == 3 and refusing:
            raise Crash("UnknownError")
        return answered(Ack(partition=0, offset=sum(attempts.values())))

    relay = OutboxRelay(
        app, pool, refuses_the_third, schema="enrollment", poll_seconds=0.05, backoff_base=0.05, backoff_cap=0.4
    )
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(2)
    assert relay.failing_for() > 1.5 and relay.last_error == "Crash: UnknownError"
    refusing = False
    await until_caught_up(relay, timeout=5)
    await relay.stop(task)
    assert relay.failing_for() == 0
    assert 3 <= relay.errors <= 12  # about 0.4 s apart once the cap is reached, not a tight loop
    third = list(attempts)[2]
    assert attempts[third] == relay.errors + 1 and relay.republished == relay.errors
    assert sorted(attempts.values()) == [1] * (total - 1) + [attempts[third]]  # the others went once


async def test_a_stored_row_no_code_can_read_is_parked_and_the_rest_is_published(
    store, producer, topic_prefix, bootstrap_servers
):
    app, pool = store
    garbled = await pool.fetchval("SELECT min(notification_id) + 2 FROM enrollment.enrollment_events")
    await pool.execute(
        "UPDATE enrollment.enrollment_events SET state = $2 WHERE notification_id = $1", garbled, b'{"not": "an event"}'
    )
    topic = topic_for("enrollment", topic_prefix)
    relay = OutboxRelay(app, pool, publisher(producer, topic), schema="enrollment")
    total = len(SUBJECTS) + len(WITHDRAWN)
    assert await relay.publish_pending() == total
    published = await read_topic(bootstrap_servers, topic, total - 1)
    assert len(published) == total - 1 and relay.published == total - 1
    [parked] = await parking.unresolved(pool, "enrollment")
    assert parked.consumer == "enrollment-relay" and parked.notification_id == garbled and parked.in_store
    assert "cannot be read" in parked.reason and await relay.lag() == 0


async def test_a_batch_is_sent_at_once_and_its_answers_taken_in_order(store):
    """The relay queues every event of a batch before the first answer comes (the producer batches them);
    on Tansu it waits for each answer before it sends the next."""
    app, pool = store
    total = len(SUBJECTS) + len(WITHDRAWN)
    for one_at_a_time in (False, True):
        await pool.execute("DELETE FROM enrollment.outbox_position")
        queued: list[asyncio.Future] = []

        async def held(envelope: Envelope, queued: list[asyncio.Future] = queued) -> asyncio.Future:
            queued.append(asyncio.get_running_loop().create_future())
            return queued[-1]

        relay = OutboxRelay(app, pool, held, schema="enrollment", one_at_a_time=one_at_a_time)
        sending = asyncio.create_task(relay.publish_pending())
        await asyncio.sleep(0.2)
        assert len(queued) == (1 if one_at_a_time else total)
        async with asyncio.timeout(10):
            for offset in range(total):
                while len(queued) <= offset:  # sent once the previous answer came (on Tansu)
                    await asyncio.sleep(0.01)
                queued[offset].set_result(Ack(partition=0, offset=offset))
        assert await sending == total and relay.published == total and await relay.lag() == 0
