"""The composition root signs what a service publishes, and a service without its key does not start."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from faults_support import read_records
from services.enrollment.main import SPEC
from services.followup.main import SPEC as FOLLOWUP
from shared.config import Settings
from shared.contract.envelope import Envelope
from shared.contract.topics import checkpoint_topic, dead_letter_topic, topic_for
from shared.service import build_app, ensure_topics, service_topics, wire
from shared.signing import carried_signature, load_signer, service_of
from support import until


def test_a_service_without_its_private_key_refuses_to_start_and_says_where_it_goes(tmp_path: Path):
    keys = tmp_path / "keys"
    settings = Settings(_env_file=None, database_url="postgresql://ucart@127.0.0.1:1/ucart", keys_dir=keys)
    with pytest.raises(SystemExit) as refused:
        build_app(SPEC, settings)
    message = str(refused.value)
    assert str(keys / "enrollment.key") in message, message
    assert "UCART_KEYS_DIR" in message and "make demo" in message


async def test_every_published_value_is_signed_as_sent(bootstrap_servers, topic_prefix, signing_keys, verifier):
    settings = Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    topic = topic_for("enrollment", topic_prefix)
    await ensure_topics(settings, [topic])
    ready = asyncio.Event()
    wiring = wire(SPEC, settings, ready, load_signer(signing_keys, "enrollment"))
    now = datetime.now(UTC)
    envelope = Envelope(
        event_id=uuid.uuid4(),
        event_type="ConsentWithdrawn",
        schema_version=1,
        subject_id="UCT-34-001",
        source="enrollment",
        stream_version=2,
        occurred_at=now - timedelta(days=1),
        recorded_at=now,
        recorded_by={"user_id": "u1", "role": "coordinator"},
        correlation_id=uuid.uuid4(),
        protocol_version="test@1",
        payload={"withdrawal_reason": "moved away"},
    )
    await wiring.broker.start()
    try:
        ready.set()
        await (await wiring.publish(envelope))  # queued, then acknowledged
    finally:
        await wiring.broker.stop()

    [record] = await read_records(bootstrap_servers, topic, 1)
    key_id, signature = carried_signature(record.headers)
    assert key_id and service_of(key_id) == "enrollment"
    assert verifier.check(record.value, key_id, signature) is None  # the exact bytes on the topic
    assert Envelope.model_validate_json(record.value) == envelope
    assert {"event_type", "event_id", "schema_version", "correlation_id"} <= {name for name, _ in record.headers}


async def test_a_service_declares_every_topic_it_may_write_with_its_partitions_and_configs(
    bootstrap_servers, topic_prefix
):
    settings = Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    topics = service_topics(FOLLOWUP, settings)
    assert set(topics) == {
        *(topic_for(s, topic_prefix) for s in ("enrollment", "treatment", "followup")),
        checkpoint_topic("followup", topic_prefix),
        *(dead_letter_topic(m.consumer, topic_prefix) for m in FOLLOWUP.read_models),
    }
    assert await ensure_topics(settings, topics) == []
    assert await ensure_topics(settings, topics) == []  # a second start finds them as they should be
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        described = {d["topic"]: d for d in await admin.describe_topics(topics)}
        assert {t: len(described[t]["partitions"]) for t in topics} == dict.fromkeys(topics, 3)
        if settings.tansu:
            return  # Tansu keeps no topic configs to read back
        [answer] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
        configs = {r[3]: {c[0]: c[1] for c in r[4]} for r in answer.resources}
    finally:
        await admin.close()
    for topic in topics:
        assert configs[topic]["retention.ms"] == "-1" and configs[topic]["min.insync.replicas"] == "1", topic


async def test_a_topic_with_another_partition_count_is_reported_not_changed(bootstrap_servers, topic_prefix):
    settings = Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    topic = topic_for("enrollment", topic_prefix)
    assert await ensure_topics(settings.model_copy(update={"topic_partitions": 2}), [topic]) == []

    async def reported() -> bool:  # once the new topic's partitions have leaders, its metadata shows them
        return await ensure_topics(settings, [topic]) == [f"topic {topic} has 2 partitions, not 3"]

    await until(reported, timeout=15)


@pytest.mark.broker("kafka", why="Tansu creates a topic on first produce")
async def test_nothing_creates_a_topic_that_was_not_declared(bootstrap_servers, topic_prefix):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, request_timeout_ms=3000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await producer.send_and_wait(f"{topic_prefix}undeclared", b"x")
    finally:
        await producer.stop()
