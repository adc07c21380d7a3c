"""Kafka over TLS: the embedded broker behind a TLS front that requires a client certificate signed by
the test CA. The service's broker and admin client, the operator's replay and plain aiokafka clients
connect with the CA and the client certificate the settings name; a wrong CA is refused. (SASL needs a
real cluster, where it is tested.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from infra import replay
from services.enrollment.main import SPEC
from shared.config import Settings
from shared.contract.topics import topic_for
from shared.service import ensure_topics
from shared.transport import kafka_options
from support import running_service
from tls_support import Authority, Issued, TLSKafka

PKI = tuple[Authority, Authority, Issued]  # the CA, another CA, a client certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> PKI:
    directory = tmp_path_factory.mktemp("kafka-pki")
    ca = Authority(directory / "ca", "test-ca")
    return ca, Authority(directory / "other", "other-ca"), ca.issue("ucart", client=True)


@pytest.fixture(scope="module")
def front(pki: PKI, tmp_path_factory) -> Iterator[TLSKafka]:
    ca, _, _ = pki
    server = ca.issue("kafka", dns=("localhost",), ips=("127.0.0.1",))
    broker = TLSKafka(server, tmp_path_factory.mktemp("kafka") / "broker.log", client_ca=ca.cert).start()
    try:
        yield broker
    finally:
        broker.stop()


def over_tls(front: TLSKafka, pki: PKI, *, trusting: Authority | None = None, **settings: object) -> Settings:
    ca, _, client = pki
    return Settings(
        _env_file=None,
        kafka_bootstrap_servers=front.bootstrap_servers,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=(trusting or ca).cert,
        kafka_ssl_certfile=client.cert,
        kafka_ssl_keyfile=client.key,
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
        broker="tansu",  # the broker behind the front (no idempotent producer)
        **settings,
    )


async def test_a_service_connects_its_broker_and_admin_client_over_tls(
    front: TLSKafka, pki: PKI, database_url, tmp_path
):
    settings = over_tls(front, pki, database_url=database_url)
    async with running_service(SPEC, settings, tmp_path) as rt:
        # Its admin client created the topics and its producer and consumers started, all through the front.
        await asyncio.wait_for(rt.broker_ready.wait(), 30)
    topic = topic_for("enrollment", settings.topic_prefix)
    assert [tp.topic for tp in await replay.partitions_of(settings, [topic])] == [topic] * settings.topic_partitions


async def test_messages_go_through_and_a_wrong_ca_is_refused(front: TLSKafka, pki: PKI):
    settings = over_tls(front, pki)
    topic = f"{settings.topic_prefix}tls"
    await ensure_topics(settings, [topic])
    producer = AIOKafkaProducer(**kafka_options(settings))
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"over TLS", partition=0)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, auto_offset_reset="earliest", group_id=None, **kafka_options(settings))
    await consumer.start()
    try:
        assert (await asyncio.wait_for(consumer.getone(), 20)).value == b"over TLS"
    finally:
        await consumer.stop()

    _, other, _ = pki
    with pytest.raises(KafkaConnectionError):
        await ensure_topics(over_tls(front, pki, trusting=other), [topic])
