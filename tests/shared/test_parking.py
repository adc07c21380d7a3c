"""Poison at every layer, on real PostgreSQL and a real broker: an event a consumer can never apply is
parked (a row with the reason, a copy on the dead-letter topic, a count) and nothing halts: the
partition, the subject's later events, reconciliation and rebuilds all go on; after a fix, a retry
applies it (a message from Kafka only once it verifies with the keys configured then)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream.kafka import KafkaBroker

from services.followup.projections import store
from shared import db, parking
from shared.config import Settings
from shared.consumer import (
    Failure,
    IdempotentConsumer,
    KafkaOrigin,
    dead_letter_publisher,
    subscribe,
)
from shared.contract.envelope import Envelope
from shared.contract.topics import dead_letter_topic, topic_for
from shared.service import ensure_topics
from shared.signing import Signer, key_id, load_verifier
from support import OTHER, POISONED, poisoned_followup_store, produce_signed, read_dead_letters, signed_origin, until


@pytest.fixture
async def followup_store(database_url):
    """A real follow-up event store holding a poison event (see `support.poisoned_followup_store`)."""
    events = await asyncio.to_thread(poisoned_followup_store, database_url)
    pool = await db.create_pool(database_url)
    yield pool, events
    await pool.close()


def raw(envelope: Envelope) -> bytes:
    return envelope.model_dump_json().encode()


async def test_a_poison_event_on_the_topic_and_in_the_store_is_parked_and_nothing_halts(
    followup_store, bootstrap_servers, topic_prefix, signing_keys, verifier
):
    pool, events = followup_store
    name = "followup-journey"
    broker = KafkaBroker(bootstrap_servers)
    dlq = dead_letter_topic(name, topic_prefix)
    consumer = IdempotentConsumer(
        store.JourneyProjection("followup"),
        pool,
        schema="followup",
        verifier=verifier,
        dead_letter=dead_letter_publisher(broker, dlq, name),
    )
    topic = topic_for("followup", topic_prefix)
    subscribe(
        broker, consumer, topics=[topic], group_id=f"{topic_prefix}journey", dead_letter_topic=dlq, retry_delay=0.1
    )
    await ensure_topics(Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers), [topic, dlq])
    await broker.start()
    try:
        # One key: one partition, the poison first; signed, as the follow-up relay publishes them.
        sent = (events[POISONED][0], events[OTHER][0], events[POISONED][1])
        await produce_signed(bootstrap_servers, signing_keys, [(topic, POISONED.encode(), raw(e)) for e in sent])

        async def handled() -> bool:
            return sum(consumer.counts.values()) == 3

        await until(handled)
        assert consumer.counts == {"applied": 2, "duplicate": 0, "parked": 1}
        other = await store.get(pool, "followup", OTHER)
        assert [a.report.term for a in other.adverse_events.values()] == ["Nausea"]
        # The subject's next event went on without the poison.
        poisoned = await store.get(pool, "followup", POISONED)
        assert [a.report.term for a in poisoned.adverse_events.values()] == ["Fever"]

        [row] = await parking.unresolved(pool, "followup")
        assert row.in_store and row.consumer == name and row.subject_id == POISONED and row.stream_version == 1
        assert row.event_id == events[POISONED][0].event_id and row.topic == topic and row.notification_id
        assert "UntranslatableCharacter" in row.reason or "\\u0000" in row.reason, row.reason
        [(body, headers)] = await read_dead_letters(bootstrap_servers, dlq, 1)
        assert body == raw(events[POISONED][0]) and headers["dead_letter_reason"] == row.reason[:1000]
        assert headers["original_topic"] == topic and headers["event_id"] == str(row.event_id)

        # Reconciliation meets the same stored event and steps over it: nothing new, nothing parked twice.
        assert await consumer.reconcile(("followup",)) == 0
        assert len(await parking.unresolved(pool, "followup")) == 1
    finally:
        await broker.stop()


async def test_a_rebuild_over_a_store_holding_poison_completes_and_parks_it(followup_store, verifier):
    pool, _events = followup_store
    consumer = IdempotentConsumer(store.JourneyProjection("followup"), pool, schema="followup", verifier=verifier)
    assert await consumer.reconcile(("followup",)) == 2
    await consumer.reset()  # a rebuild tries the poison again, and parks it again
    assert await consumer.reconcile(("followup",)) == 2
    [row] = await parking.unresolved(pool, "followup")
    assert row.in_store and row.topic is None and row.notification_id and row.stream_version == 1
    assert {s: len(j.adverse_events) for s in (POISONED, OTHER) if (j := await store.get(pool, "followup", s))} == {
        POISONED: 1,
        OTHER: 1,
    }
    assert await parking.counts(pool, "followup") == {"followup-journey": 1}


@dataclass
class Flaky:
    """A projection with bugs: some events always fail the same way, some fail a few times, with
    other errors each time, before they work."""

    name: str = "flaky"
    broken: set[str] = field(default_factory=set)
    hiccups: dict[str, list[str]] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)

    async def apply(self, conn, events) -> None:
        terms = []
        for _, payload in events:
            if payload.term in self.broken:
                raise RuntimeError(f"cannot apply {payload.term}")
            if self.hiccups.get(payload.term):
                raise RuntimeError(self.hiccups[payload.term].pop(0))
            terms.append(payload.term)
        self.seen.extend(terms)  # all or nothing, as a transaction

    async def reset(self, conn) -> None:
        self.seen.clear()


async def test_only_the_same_failure_twice_parks_an_event(followup_store, verifier):
    pool, _ = followup_store
    flaky = Flaky(broken={"Rash\x00"}, hiccups={"Fever": ["a passing hiccup"], "Nausea": ["one", "two", "three"]})
    consumer = IdempotentConsumer(flaky, pool, schema="followup", verifier=verifier)  # type: ignore[arg-type]  # a stand-in fold
    assert await consumer.reconcile(("followup",)) == 1
    assert flaky.seen == ["Fever"]  # failed once, then worked: not parked
    parked = await parking.unresolved(pool, "followup", consumer="flaky")
    # The same error twice; and, failing differently each time, the third failure.
    assert [(p.subject_id, p.stream_version, p.reason) for p in parked] == [
        (POISONED, 1, "RuntimeError: cannot apply Rash\\x00"),
        (OTHER, 1, "RuntimeError: three"),
    ]


async def test_from_kafka_a_first_failure_is_redelivered_and_the_second_parks(followup_store, signing_keys, verifier):
    pool, events = followup_store
    flaky = Flaky(broken={"Nausea"})
    consumer = IdempotentConsumer(flaky, pool, schema="followup", verifier=verifier)  # type: ignore[arg-type]  # a stand-in fold
    message = signed_origin(signing_keys, "followup", 7, raw(events[OTHER][0]), OTHER.encode())
    with pytest.raises(Failure):  # the broker delivers it again
        await consumer.receive(message, redelivered=True)
    assert await parking.unresolved(pool, "followup") == []
    assert await consumer.receive(message, redelivered=True) == "parked"
    [row] = await parking.unresolved(pool, "followup")
    assert row.in_store and row.kafka_offset == 7 and row.subject_id == OTHER


async def test_a_parked_event_is_applied_by_a_retry_after_the_fix(followup_store, signing_keys, verifier):
    pool, events = followup_store
    flaky = Flaky(broken={"Fever", "Rash\x00"})
    consumer = IdempotentConsumer(flaky, pool, schema="followup", verifier=verifier)  # type: ignore[arg-type]  # a stand-in fold
    assert await consumer.reconcile(("followup",)) == 1
    parked = await parking.unresolved(pool, "followup")
    assert [p.stream_version for p in parked] == [1, 2] and all(p.subject_id == POISONED for p in parked)

    flaky.broken = {"Rash\x00"}  # Fever is fixed; the NUL is not
    outcomes = [await consumer.retry(p) for p in parked]
    assert outcomes == ["parked", "applied"]
    assert flaky.seen == ["Nausea", "Fever"]
    [still] = await parking.unresolved(pool, "followup")
    assert still.stream_version == 1 and still.retried_at is not None
    resolved = await pool.fetchval("SELECT resolution FROM followup.parked_events WHERE stream_version = 2")
    assert resolved == "retried: applied"
    # A retried event is applied once: reconciliation and a late copy from Kafka change nothing.
    assert await consumer.reconcile(("followup",)) == 0
    late = signed_origin(signing_keys, "followup", 9, raw(events[POISONED][1]))
    assert await consumer.receive(late) == "duplicate"
    assert flaky.seen == ["Nausea", "Fever"]


async def test_a_forged_message_that_fails_does_not_hide_the_real_event(followup_store, signing_keys, verifier):
    pool, events = followup_store
    consumer = IdempotentConsumer(store.JourneyProjection("followup"), pool, schema="followup", verifier=verifier)
    real = events[OTHER][0]
    forged = real.model_copy(update={"event_id": uuid.uuid4(), "payload": {**real.payload, "term": "Bad\x00"}})
    # Signed (a service's bug, or its key stolen): it reads, and fails to apply.
    assert await consumer.receive(signed_origin(signing_keys, "followup", 1, raw(forged))) == "parked"
    [row] = await parking.unresolved(pool, "followup")
    assert not row.in_store  # not what the store holds: recorded, not stepped over
    assert await consumer.receive(signed_origin(signing_keys, "followup", 2, raw(real))) == "applied"
    journey = await store.get(pool, "followup", OTHER)
    assert [a.report.term for a in journey.adverse_events.values()] == ["Nausea"]


async def test_a_retry_verifies_a_parked_message_again_with_the_keys_configured_now(
    followup_store, signing_keys, tmp_path
):
    pool, events = followup_store
    # The follow-up service rotated its key, and this consumer started before the new public key was given out.
    rotated = Ed25519PrivateKey.generate()
    signer = Signer(key_id("followup", rotated.public_key()), rotated)
    before = IdempotentConsumer(
        store.JourneyProjection("followup"), pool, schema="followup", verifier=load_verifier(signing_keys)
    )
    body = raw(events[OTHER][0])
    headers = signer.headers(body)
    message = KafkaOrigin("ucart.followup.events", 0, 3, body, OTHER.encode(), signer.key_id, headers["signature"])
    assert await before.receive(message) == "parked"
    [row] = await parking.unresolved(pool, "followup")
    assert row.reason.startswith("signature: unknown key") and not row.in_store

    assert await before.retry(row) == "parked"  # verified again, and still refused
    [row] = await parking.unresolved(pool, "followup")
    assert row.reason.startswith("signature: unknown key") and row.retried_at is not None
    assert await store.get(pool, "followup", OTHER) is None

    keys = tmp_path / "keys"  # the public keys given out since: the old ones and the rotated one
    shutil.copytree(signing_keys, keys, ignore=shutil.ignore_patterns("*.key"))
    (keys / f"{signer.key_id}.pub").write_bytes(
        rotated.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    after = IdempotentConsumer(
        store.JourneyProjection("followup"), pool, schema="followup", verifier=load_verifier(keys)
    )
    assert await after.retry(row) == "applied"
    assert await parking.unresolved(pool, "followup") == []
    journey = await store.get(pool, "followup", OTHER)
    assert journey and [a.report.term for a in journey.adverse_events.values()] == ["Nausea"]
