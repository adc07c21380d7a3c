"""The embedded Apache Kafka (KRaft, one node): a real broker on free ports in a temporary directory.

One broker serves the module; the restart tests stop and start it on the same port and data directory.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, UnknownTopicOrPartitionError
from aiokafka.structs import OffsetAndMetadata

from infra import kafka
from infra.embedded import EmbeddedKafka, free_port
from infra.kafka import EmbeddedApacheKafka, embedded_broker

needs_kafka = pytest.mark.skipif(
    not kafka.available(),
    reason=f"Apache Kafka cannot run here ({kafka.missing() or 'jars not installed'}): "
    "run `python -m infra install-kafka` with Java 17+ and Maven",
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedApacheKafka]:
    home = tmp_path_factory.mktemp("apache-kafka")
    running = EmbeddedApacheKafka(free_port(), home / "broker.log", home / "data")
    running.start()
    try:
        yield running
    finally:
        running.stop()


async def create_topic(servers: str, partitions: int = 3) -> str:
    topic = f"t-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(topic, partitions, 1)])
        assert all(error[1] == 0 for error in response.topic_errors), response
    finally:
        await admin.close()
    return topic


async def list_topics(servers: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


async def partitions_of(servers: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 0, described
    return sorted(p["partition"] for p in described["partitions"])


async def produce(servers: str, topic: str, values: list[str]) -> None:
    # Idempotent: the broker must grant a producer id (Tansu refuses InitProducerId).
    producer = AIOKafkaProducer(bootstrap_servers=servers, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value.encode(), key=value.encode())
    finally:
        await producer.stop()


async def consume(servers: str, topic: str, count: int, group: str | None = None) -> list[tuple[int, int, str]]:
    """`count` records as (partition, offset, value): from the group's committed offsets, else the earliest."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(3)])
        records: list[tuple[int, int, str]] = []
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records += [(r.partition, r.offset, r.value.decode()) for r in batch]
        await asyncio.sleep(0.5)  # nothing more than expected arrives
        assert not any((await consumer.getmany(timeout_ms=500)).values())
        return records
    finally:
        await consumer.stop()


async def commit(servers: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=servers, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def committed(servers: str, group: str) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        found: dict[TopicPartition, OffsetAndMetadata] = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items()}


@needs_kafka
async def test_a_topic_takes_an_idempotent_producer_and_reads_back_from_the_earliest(
    broker: EmbeddedApacheKafka,
) -> None:
    servers = broker.bootstrap_servers
    topic = await create_topic(servers)
    assert await partitions_of(servers, topic) == [0, 1, 2]
    values = [f"v{i}" for i in range(30)]
    await produce(servers, topic, values)
    records = await consume(servers, topic, len(values))
    assert sorted(v for _, _, v in records) == sorted(values)
    assert {p for p, _, _ in records} == {0, 1, 2}  # keys spread over the partitions
    for partition in range(3):  # each partition in the order produced
        in_partition = [v for p, _, v in sorted(records) if p == partition]
        assert in_partition == [v for v in values if v in in_partition]


@needs_kafka
async def test_a_clean_restart_keeps_topics_records_and_committed_offsets(broker: EmbeddedApacheKafka) -> None:
    servers, group = broker.bootstrap_servers, f"g-{uuid.uuid4().hex[:8]}"
    topic = await create_topic(servers)
    await produce(servers, topic, [f"before-{i}" for i in range(12)])
    before = await consume(servers, topic, 12)
    # The group has read everything on partition 0 and nothing on the others.
    ends = {p: 1 + max(o for q, o, _ in before if q == p) for p in range(3)}
    await commit(servers, group, {TopicPartition(topic, 0): ends[0]})

    broker.stop()
    assert (broker.log_dir / ".kafka_cleanshutdown").exists()
    broker.start()

    assert topic in await list_topics(servers)
    assert await partitions_of(servers, topic) == [0, 1, 2]
    assert sorted(await consume(servers, topic, 12)) == sorted(before)
    assert await committed(servers, group) == {TopicPartition(topic, 0): ends[0]}
    # The group resumes where it committed: on partition 0 it gets only what came after.
    await produce(servers, topic, [f"after-{i}" for i in range(12)])
    resumed = await consume(servers, topic, 24 - ends[0], group)
    assert not [r for r in resumed if r[0] == 0 and r[2].startswith("before-")]
    assert sorted(v for _, _, v in resumed if v.startswith("before-")) == sorted(v for p, _, v in before if p != 0)


@needs_kafka
async def test_a_killed_broker_recovers_every_acknowledged_record(broker: EmbeddedApacheKafka) -> None:
    servers = broker.bootstrap_servers
    topic = await create_topic(servers)
    values = [f"v{i}" for i in range(20)]
    await produce(servers, topic, values)

    broker.kill()
    assert not (broker.log_dir / ".kafka_cleanshutdown").exists()
    broker.start()

    assert sorted(v for _, _, v in await consume(servers, topic, 20)) == sorted(values)
    await produce(servers, topic, ["after"])
    assert "after" in [v for _, _, v in await consume(servers, topic, 21)]


@needs_kafka
async def test_topics_are_never_created_by_producing_or_asking(broker: EmbeddedApacheKafka) -> None:
    servers, topic = broker.bootstrap_servers, f"unknown-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=servers, request_timeout_ms=2000)
    await producer.start()
    try:
        # The producer waits for the topic's metadata, which never comes (aiokafka < 0.14 says "timeout").
        with pytest.raises((UnknownTopicOrPartitionError, KafkaTimeoutError)):
            await producer.send_and_wait(topic, b"lost")
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert described["error_code"] == 3  # UNKNOWN_TOPIC_OR_PARTITION
    assert topic not in await list_topics(servers)


@needs_kafka
def test_a_second_broker_on_a_taken_port_is_refused(broker: EmbeddedApacheKafka, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="already in use"):
        EmbeddedApacheKafka(broker.port, None, tmp_path / "data").start()


def test_ucart_broker_chooses_the_embedded_broker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def chosen(value: str | None) -> type:
        if value is None:
            monkeypatch.delenv("UCART_BROKER", raising=False)
        else:
            monkeypatch.setenv("UCART_BROKER", value)
        return type(embedded_broker(free_port(), None, tmp_path))

    assert chosen("tansu") is EmbeddedKafka
    assert chosen(None) is (EmbeddedApacheKafka if kafka.available() else EmbeddedKafka)
    with pytest.raises(ValueError, match="kafka or tansu"):
        chosen("redpanda")
    if kafka.available():
        assert chosen("kafka") is EmbeddedApacheKafka
    else:
        with pytest.raises(RuntimeError, match="install-kafka"):
            chosen("kafka")
