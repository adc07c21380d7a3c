"""Idempotent consumers on a real broker and real PostgreSQL: duplicates, gaps, poison and forged messages."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from faststream.kafka import KafkaBroker

from services.enrollment import domain
from services.enrollment.domain import EnrollmentSubject
from services.followup.projections import store
from shared import db, parking
from shared.config import Settings
from shared.consumer import IdempotentConsumer, dead_letter_publisher, subscribe
from shared.contract.envelope import Envelope
from shared.contract.topics import dead_letter_topic, topic_for
from shared.contract.upcasting import latest_payload
from shared.eventstore.application import SubjectApplication
from shared.protocol import load_protocol
from shared.service import ensure_topics
from shared.signing import KEY_ID_HEADER, SIGNATURE_HEADER, Signer
from support import produce_signed, read_dead_letters, signed_origin, until

SUBJECT = "UCT-08-001"
PROTOCOL = load_protocol()


def envelope(event_type: str, version: int, payload: dict, source: str = "enrollment", days_ago: int = 5) -> Envelope:
    now = datetime.now(UTC)
    return Envelope(
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=1,
        subject_id=SUBJECT,
        source=source,
        stream_version=version,
        occurred_at=now - timedelta(days=days_ago),
        recorded_at=now,
        recorded_by={"user_id": "u1", "role": "coordinator"},
        correlation_id=uuid.uuid4(),
        protocol_version="test@1",
        payload=payload,
    )


ENROLLED = envelope(
    "Enrolled",
    1,
    {
        "site_id": "08",
        "consent_signed_on": "2026-01-01",
        "year_of_birth": 1970,
        "sex": "F",
        "disease_status": "relapsed",
        "cd19_positive": True,
    },
)
WITHDRAWN = envelope("ConsentWithdrawn", 2, {"withdrawal_reason": "moved away"}, days_ago=1)
AE = envelope(
    "AEReported",
    1,
    {"term": "CRS", "category": "CRS", "grade": 2, "serious": False, "relatedness": "possible"},
    source="followup",
)
AE_V3 = envelope(
    "AEReported",
    3,
    {"term": "ICANS", "category": "ICANS", "grade": 1, "serious": False, "relatedness": "possible"},
    source="followup",
)


def raw(envelope: Envelope) -> bytes:
    return envelope.model_dump_json().encode()


@pytest.fixture
async def journey_consumer(database_url, bootstrap_servers, topic_prefix, verifier):
    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("followup") + store.ddl("followup"))
    broker = KafkaBroker(bootstrap_servers)
    name = "followup-journey"
    dlq = dead_letter_topic(name, topic_prefix)
    consumer = IdempotentConsumer(
        store.JourneyProjection("followup"),
        pool,
        schema="followup",
        verifier=verifier,
        dead_letter=dead_letter_publisher(broker, dlq, name),
    )
    topics = [topic_for(s, topic_prefix) for s in ("enrollment", "followup")]
    subscribe(broker, consumer, topics=topics, group_id=f"{topic_prefix}journey", dead_letter_topic=dlq)
    # Declared up front, as a service does: no client creates a topic.
    await ensure_topics(Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers), [*topics, dlq])
    await broker.start()
    yield consumer, pool, topic_prefix
    await broker.stop()
    await pool.close()


async def test_duplicates_change_nothing_and_gaps_are_recorded(journey_consumer, bootstrap_servers, signing_keys):
    consumer, pool, prefix = journey_consumer
    enrollment, followup = topic_for("enrollment", prefix), topic_for("followup", prefix)

    def produce(topic: str, *values: bytes):
        return produce_signed(bootstrap_servers, signing_keys, [(topic, SUBJECT.encode(), v) for v in values])

    await produce(enrollment, raw(ENROLLED), raw(ENROLLED), raw(WITHDRAWN), raw(ENROLLED))
    await produce(followup, raw(AE), raw(AE), raw(AE_V3))

    async def all_seen():
        return sum(consumer.counts.values()) == 7

    await until(all_seen)
    assert consumer.counts == {"applied": 4, "duplicate": 3, "parked": 0}
    journey = await store.get(pool, "followup", SUBJECT)
    # Schema v1 AEs on the wire are read through the upcaster (the awareness time defaults to the onset).
    assert len(journey.adverse_events) == 2 and journey.worst_grade("CRS") == 2 and journey.worst_grade("ICANS") == 1
    assert {ae.report.aware_at for ae in journey.adverse_events.values()} == {AE.occurred_at, AE_V3.occurred_at}
    assert journey.enrolled_on and journey.withdrawn_on
    gaps = await pool.fetch("SELECT source, expected_version, received_version FROM followup.consumer_gaps")
    assert [tuple(g) for g in gaps] == [("followup", 2, 3)]


async def test_unreadable_messages_are_parked_and_the_partition_keeps_flowing(
    journey_consumer, bootstrap_servers, signing_keys
):
    consumer, pool, prefix = journey_consumer
    topic = topic_for("enrollment", prefix)
    unknown = ENROLLED.model_copy(update={"event_type": "Teleported"}).model_dump_json().encode()
    future_version = ENROLLED.model_copy(update={"schema_version": 99}).model_dump_json().encode()
    values = (b"{not json", unknown, future_version, ENROLLED.model_dump_json().encode())
    # Signed by the enrollment key: parked for what they hold, not for their signature.
    await produce_signed(bootstrap_servers, signing_keys, [(topic, SUBJECT.encode(), v) for v in values])

    async def all_seen():
        return sum(consumer.counts.values()) == 4

    await until(all_seen)
    assert consumer.counts == {"applied": 1, "duplicate": 0, "parked": 3}
    assert (await store.get(pool, "followup", SUBJECT)).enrolled_on is not None
    assert await pool.fetchval("SELECT count(*) FROM followup.parked_events WHERE NOT in_store") == 3

    parked = await read_dead_letters(bootstrap_servers, dead_letter_topic(consumer.name, prefix), 3)
    assert [p[0] for p in parked] == [b"{not json", unknown, future_version]
    reasons = [p[1]["dead_letter_reason"] for p in parked]
    assert "invalid event" in reasons[0] and "Teleported" in reasons[1] and "v99" in reasons[2]
    assert all(p[1]["original_topic"] == topic for p in parked)


async def test_two_deliveries_of_a_subject_s_first_event_at_once_apply_it_once(journey_consumer):
    """Kafka and the reconciliation may deliver the same first event together: one applies it."""
    consumer, pool, _ = journey_consumer
    await pool.execute("DELETE FROM followup.consumer_applied; DELETE FROM followup.journeys")
    first = envelope("Enrolled", 1, ENROLLED.payload | {"site_id": "09"}, days_ago=3).model_copy(
        update={"subject_id": "UCT-09-777"}
    )
    payload = latest_payload(first)
    outcomes = await asyncio.gather(*(consumer.apply(first, payload) for _ in range(8)))
    assert sorted(outcomes) == ["applied"] + ["duplicate"] * 7
    journey = await store.get(pool, "followup", "UCT-09-777")
    assert journey is not None and sum(journey.records_per_day.values()) == 1  # folded once


@pytest.fixture
async def enrollment_store(database_url):
    """A real enrollment event store with one subject enrolled and then withdrawn (versions 1 and 2)."""
    from shared.contract.envelope import RecordedBy
    from shared.contract.events import ConsentWithdrawn, Enrolled
    from shared.eventstore import EventMeta
    from shared.eventstore.application import postgres_env

    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("enrollment"))
    await pool.close()
    app = await asyncio.to_thread(
        SubjectApplication, EnrollmentSubject, "enrollment", postgres_env(database_url, "enrollment")
    )
    now = datetime.now(UTC)

    def meta(days: int) -> EventMeta:
        return EventMeta(
            subject_id=SUBJECT,
            occurred_at=now - timedelta(days=days),
            recorded_by=RecordedBy(user_id="u1", role="coordinator"),
            protocol_version="t@1",
        )

    enrolled = Enrolled(
        site_id="08",
        consent_signed_on=(now - timedelta(days=9)).date(),
        year_of_birth=1970,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    stored = await asyncio.to_thread(app.record, partial(domain.enrol, protocol=PROTOCOL), meta(8), enrolled)
    stored += await asyncio.to_thread(
        app.record, partial(domain.withdraw, facts=None), meta(2), ConsentWithdrawn(withdrawal_reason="moved")
    )
    yield stored
    app.close()


async def test_a_gap_is_filled_from_the_source_event_store(journey_consumer, enrollment_store):
    consumer, pool, _ = journey_consumer
    enrolled, withdrawn = enrollment_store
    assert await consumer.apply(withdrawn, withdrawn.typed_payload()) == "applied"  # version 1 never arrived
    journey = await store.get(pool, "followup", SUBJECT)
    assert journey.enrolled_on == enrolled.occurred_at.date() and journey.withdrawn_on == withdrawn.occurred_at.date()
    gap = await pool.fetchrow("SELECT expected_version, received_version, repaired FROM followup.consumer_gaps")
    assert tuple(gap) == (1, 2, True)
    assert await consumer.apply(enrolled, enrolled.typed_payload()) == "duplicate"


async def test_reconciliation_applies_what_kafka_never_delivered_once(journey_consumer, enrollment_store):
    consumer, pool, _ = journey_consumer
    assert await consumer.reconcile(("enrollment",)) == 2
    assert (await store.get(pool, "followup", SUBJECT)).withdrawn_on is not None
    assert await consumer.reconcile(("enrollment",)) == 0  # the watermark moved on
    late_copy = enrollment_store[0]
    assert await consumer.apply(late_copy, late_copy.typed_payload()) == "duplicate"


async def test_a_message_that_does_not_verify_is_parked_unread_and_hides_nothing(
    journey_consumer, enrollment_store, bootstrap_servers, signing_keys
):
    consumer, pool, prefix = journey_consumer
    enrolled, withdrawn = enrollment_store
    topic = topic_for("enrollment", prefix)
    exact = raw(enrolled)  # the very event the store holds, byte for byte
    genuine = signed_origin(signing_keys, "enrollment", 1, exact, SUBJECT.encode())
    stranger = Signer("enrollment-000000000000", Ed25519PrivateKey.generate())
    forged = {
        "unsigned": replace(genuine, key_id=None, signature=None),
        "unknown key": replace(genuine, **_signed_by(stranger, exact)),
        "altered": replace(genuine, body=exact.replace(b'"site_id":"08"', b'"site_id":"66"')),
        "another service's key": signed_origin(signing_keys, "treatment", 1, exact, SUBJECT.encode()),
        "garbled signature": replace(genuine, signature="not base64!"),
    }
    assert forged["altered"].body != exact
    for what, message in forged.items():
        assert await consumer.receive(replace(message, topic=topic)) == "parked", what
    assert await store.get(pool, "followup", SUBJECT) is None  # nothing applied

    rows = await parking.unresolved(pool, "followup")
    assert [r.reason.split(":")[0] for r in rows] == ["signature"] * len(forged)
    assert not any(r.in_store or r.subject_id or r.stream_version for r in rows)  # unread: no hole, nothing hidden
    reasons = [r.reason for r in rows]
    assert "not signed" in reasons[0] and "unknown key" in reasons[1] and "does not match" in reasons[2]
    assert "a key of treatment, not of enrollment" in reasons[3] and "not base64" in reasons[4]
    assert rows[1].key_id == stranger.key_id and rows[0].label == "unverified message v?"

    # The real events, signed, still apply: version 1 was never taken by a forgery.
    assert await consumer.receive(replace(genuine, topic=topic)) == "applied"
    assert await consumer.receive(signed_origin(signing_keys, "enrollment", 2, raw(withdrawn))) == "applied"
    journey = await store.get(pool, "followup", SUBJECT)
    assert journey and journey.site_id == "08" and journey.withdrawn_on == withdrawn.occurred_at.date()

    letters = await read_dead_letters(bootstrap_servers, dead_letter_topic(consumer.name, prefix), len(forged))
    assert all(h["dead_letter_reason"].startswith("signature:") for _, h in letters)
    assert letters[1][1]["original_key_id"] == stranger.key_id and "original_key_id" not in letters[0][1]


def _signed_by(signer: Signer, value: bytes) -> dict[str, str]:
    headers = signer.headers(value)
    return {"key_id": headers[KEY_ID_HEADER], "signature": headers[SIGNATURE_HEADER]}
