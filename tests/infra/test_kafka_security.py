"""The embedded Apache Kafka with SASL/SCRAM and ACLs: each service connects as its own principal, with
the product's own client settings (shared/transport.py), and may write only its own topics.

One secured broker serves the module.
"""

from __future__ import annotations

import asyncio
import json
import logging
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupAuthorizationFailedError, KafkaConnectionError, TopicAuthorizationFailedError

from infra import kafka
from infra.embedded import free_port
from infra.kafka import EmbeddedApacheKafka
from infra.kafka.security import CREDENTIALS_FILE, PRINCIPALS, BrokerSecurity, Operation, Pattern, Resource
from services.enrollment import domain as enrollment
from services.enrollment import main as enrollment_service
from services.followup import main as followup_service
from services.treatment import main as treatment_service
from shared import transport
from shared.config import Settings
from shared.contract.envelope import Envelope, RecordedBy
from shared.contract.events import Enrolled
from shared.contract.topics import SOURCES, checkpoint_topic, dead_letter_topic, topic_for
from shared.eventstore import EventMeta
from shared.protocol import load_protocol
from shared.service import ServiceSpec, ensure_topics
from support import running_service

pytestmark = pytest.mark.skipif(
    not kafka.available(),
    reason=f"Apache Kafka cannot run here ({kafka.missing() or 'jars not installed'}): "
    "run `python -m infra install-kafka` with Java 17+ and Maven",
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedApacheKafka]:
    home = tmp_path_factory.mktemp("secured-kafka")
    data = home / "data"
    running = EmbeddedApacheKafka(free_port(), home / "broker.log", data, security=BrokerSecurity(data))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def settings(broker: EmbeddedApacheKafka, principal: str) -> Settings:
    """A service's settings, as its process would read them from UCART_KAFKA_* variables."""
    assert broker.security is not None
    return Settings(
        _env_file=None, kafka_bootstrap_servers=broker.bootstrap_servers, **broker.security.settings(principal)
    )


def options(broker: EmbeddedApacheKafka, principal: str) -> dict[str, Any]:
    return transport.kafka_options(settings(broker, principal))


async def produce(broker: EmbeddedApacheKafka, principal: str, topic: str, value: bytes) -> None:
    producer = AIOKafkaProducer(**options(broker, principal), acks="all", request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=b"subject")
    finally:
        await producer.stop()


async def read(broker: EmbeddedApacheKafka, principal: str, topic: str, group: str, until: bytes) -> list[bytes]:
    """What `principal` reads of `topic` in `group`, up to the value `until`."""
    consumer = AIOKafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", **options(broker, principal))
    await consumer.start()
    try:
        values: list[bytes] = []
        async with asyncio.timeout(30):
            while until not in values:
                values.append((await consumer.getone()).value)
        await consumer.commit()
        return values
    finally:
        await consumer.stop()


async def topics_seen(broker: EmbeddedApacheKafka, principal: str) -> set[str]:
    admin = AIOKafkaAdminClient(**options(broker, principal))
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_each_service_writes_its_own_topic_and_is_refused_anothers(broker: EmbeddedApacheKafka) -> None:
    enrollment, treatment = topic_for("enrollment"), topic_for("treatment")
    # Each service creates its own topic at start, as shared/service.py does.
    await ensure_topics(settings(broker, "enrollment"), [enrollment])
    await ensure_topics(settings(broker, "treatment"), [treatment])

    await produce(broker, "treatment", treatment, b"a treatment event")
    with pytest.raises(TopicAuthorizationFailedError) as refused:
        await produce(broker, "treatment", enrollment, b"forged")
    assert enrollment in str(refused.value)

    # Nothing reached the enrollment topic: its owner reads its own first event, not the forgery.
    await produce(broker, "enrollment", enrollment, b"an enrollment event")
    values = await read(broker, "followup", enrollment, "ucart-followup-facts", until=b"an enrollment event")
    assert values == [b"an enrollment event"]


async def test_a_service_reads_the_others_topics_in_its_own_groups_only(broker: EmbeddedApacheKafka) -> None:
    treatment = topic_for("treatment")
    await ensure_topics(settings(broker, "treatment"), [treatment])
    await produce(broker, "treatment", treatment, b"for the others")
    assert b"for the others" in await read(broker, "enrollment", treatment, "ucart-enrollment-facts", b"for the others")
    with pytest.raises(GroupAuthorizationFailedError):  # another service's group
        await read(broker, "enrollment", treatment, "ucart-treatment-facts", b"for the others")


async def test_a_service_creates_the_topics_it_reads_but_no_other_services_checkpoints(
    broker: EmbeddedApacheKafka,
) -> None:
    # At start a service creates every event topic (it subscribes to the others'), as on a broker without
    # ACLs; another service's checkpoint topic it may not create.
    events = [topic_for(s) for s in SOURCES]
    await ensure_topics(settings(broker, "treatment"), [*events, checkpoint_topic("followup")])
    seen = await topics_seen(broker, "admin")
    assert set(events) <= seen
    assert checkpoint_topic("followup") not in seen
    await ensure_topics(settings(broker, "followup"), [checkpoint_topic("followup")])
    assert checkpoint_topic("followup") in await topics_seen(broker, "admin")


async def test_a_client_without_valid_credentials_is_refused(
    broker: EmbeddedApacheKafka, caplog: pytest.LogCaptureFixture
) -> None:
    assert broker.security is not None
    right = broker.security.client_options("treatment")

    async def connect(servers: str = broker.bootstrap_servers, **client: Any) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=5000, **client)
        try:
            await admin.start()
            await admin.list_topics()
        finally:
            await admin.close()

    await connect(**right)  # the same client with the right password connects
    with pytest.raises(KafkaConnectionError):
        await connect()  # PLAINTEXT: no SASL handshake, the broker hangs up
    for wrong in ({"sasl_plain_password": "not-the-password"}, {"sasl_plain_username": "nobody"}):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="aiokafka"), pytest.raises(KafkaConnectionError):
            await connect(**right | wrong)
        assert "SaslAuthenticationFailed" in caplog.text, wrong

    # Nor does the controller's listener take a client without SASL, or a service's SCRAM credentials.
    listeners = dict(
        line.split("=", 1) for line in (broker.data_dir / "server.properties").read_text().splitlines() if "=" in line
    )["listeners"]
    controller = listeners.split("CONTROLLER://", 1)[1]
    for client in ({}, right):
        with pytest.raises(KafkaConnectionError):
            await connect(controller, **client)


def test_the_passwords_are_kept_private_and_never_logged(broker: EmbeddedApacheKafka) -> None:
    assert broker.log_file is not None
    credentials = broker.data_dir / CREDENTIALS_FILE
    passwords: dict[str, str] = json.loads(credentials.read_text())
    assert set(passwords) == set(PRINCIPALS)
    assert len(set(passwords.values())) == len(PRINCIPALS)
    for private in (credentials, broker.data_dir / "server.properties"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert broker.security is not None and not broker.security.format_arguments_file.exists()  # used, removed
    log = broker.log_file.read_text()
    assert not [name for name, password in passwords.items() if password in log]
    assert "storedKey" not in log  # storage formatting lists the SCRAM keys: its output is not kept


def test_the_same_credentials_are_used_after_a_restart_and_never_replaced(tmp_path: Path) -> None:
    security = BrokerSecurity(tmp_path)
    first = {name: security.password(name) for name in PRINCIPALS}
    assert {name: BrokerSecurity(tmp_path).password(name) for name in PRINCIPALS} == first
    (tmp_path / "log").mkdir()  # the storage is formatted with these credentials
    (tmp_path / CREDENTIALS_FILE).unlink()
    with pytest.raises(RuntimeError, match="restore the file, or delete the data directory"):
        BrokerSecurity(tmp_path).password("admin")


def allowed(principal: str, resource: Resource, name: str, operation: Operation) -> bool:
    return any(
        acl.principal == principal
        and acl.resource == resource
        and acl.operation == operation
        and (name == acl.name if acl.pattern == Pattern.LITERAL else name.startswith(acl.name))
        for acl in BrokerSecurity(Path("unused")).acls()
    )


@pytest.mark.parametrize("spec", [enrollment_service.SPEC, treatment_service.SPEC, followup_service.SPEC])
def test_the_acls_allow_what_each_service_does_and_no_write_to_anothers_topics(spec: ServiceSpec) -> None:
    name = spec.name
    for topic in (topic_for(name), checkpoint_topic(name)):
        assert allowed(name, Resource.TOPIC, topic, Operation.WRITE)
        assert allowed(name, Resource.TOPIC, topic, Operation.CREATE)
    for model in spec.read_models:
        assert allowed(name, Resource.GROUP, f"ucart-{model.consumer}", Operation.READ)
        assert allowed(name, Resource.TOPIC, dead_letter_topic(model.consumer), Operation.WRITE)
        for source in model.sources:
            assert allowed(name, Resource.TOPIC, topic_for(source), Operation.READ)
    for other in (s for s in SOURCES if s != name):
        for topic in (topic_for(other), checkpoint_topic(other), dead_letter_topic(f"{other}-subject-facts")):
            assert not allowed(name, Resource.TOPIC, topic, Operation.WRITE), topic
        assert not allowed(name, Resource.TOPIC, checkpoint_topic(other), Operation.CREATE)
        assert not allowed(name, Resource.GROUP, f"ucart-{other}-subject-facts", Operation.READ)


async def test_a_service_runs_as_its_principal_and_its_relay_publishes(
    broker: EmbeddedApacheKafka, database_url: str, tmp_path: Path
) -> None:
    service = settings(broker, "enrollment").model_copy(update={"database_url": database_url})
    subject = "UCT-09-301"
    enrolled = Enrolled(
        site_id="09",
        consent_signed_on=(datetime.now(UTC) - timedelta(days=3)).date(),
        year_of_birth=1970,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    meta = EventMeta(
        subject_id=subject,
        occurred_at=datetime.now(UTC) - timedelta(days=2),
        recorded_by=RecordedBy(user_id="u1", role="coordinator"),
        protocol_version="t@1",
    )
    # The services do not create their dead-letter topics; the unsigned messages of the other tests go there.
    await ensure_topics(service, [dead_letter_topic(m.consumer) for m in enrollment_service.SPEC.read_models])
    async with running_service(enrollment_service.SPEC, service, tmp_path) as rt:
        # Its admin client made its topics, its producer and consumers started: all as `enrollment`.
        await asyncio.wait_for(rt.broker_ready.wait(), 30)
        await asyncio.to_thread(rt.store.record, partial(enrollment.enrol, protocol=load_protocol()), meta, enrolled)
        consumer = AIOKafkaConsumer(
            topic_for("enrollment"), group_id=None, auto_offset_reset="earliest", **options(broker, "followup")
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                while True:  # other tests wrote here too: the relay's envelope is the one for the subject
                    value = (await consumer.getone()).value
                    if value.startswith(b"{") and Envelope.model_validate_json(value).subject_id == subject:
                        break
        finally:
            await consumer.stop()
    assert checkpoint_topic("enrollment") in await topics_seen(broker, "admin")


def test_a_secured_stack_starts_each_service_as_its_own_principal(tmp_path: Path) -> None:
    """UCART_KAFKA_EMBEDDED_SASL: the stack's services get their own principal and password, nobody else's."""
    from infra.processes import ServiceGroup
    from infra.stack import Stack

    settings = Settings(_env_file=None, data_dir=tmp_path, kafka_embedded_sasl=True)
    stack = Stack(settings)
    stack.security = BrokerSecurity(tmp_path / "kafka")
    group = ServiceGroup(settings, "postgresql://unused@localhost/unused", "127.0.0.1:1", tmp_path, stack.principals())
    for name in SOURCES:
        env = group[name].env
        assert env["UCART_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env["UCART_KAFKA_SASL_USERNAME"] == name
        assert env["UCART_KAFKA_SASL_PASSWORD"] == stack.security.password(name)
    assert Stack(Settings(_env_file=None, data_dir=tmp_path)).principals() == {}  # unsecured: no principals
