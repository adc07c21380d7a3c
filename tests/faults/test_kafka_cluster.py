"""A real 3-broker Apache Kafka cluster (KRaft, replication factor 3, min.insync.replicas=2) under
faults while commands flow: the leader of a partition SIGKILLed, then started again; then the new leader
stopped gracefully and started again (a rolling restart's step). Nothing stored is lost or doubled on the
topics (read as an outside subscriber, by event id), every command succeeds, relays and consumers resume
by themselves (the reconciliation under Kafka is held back, so that Kafka alone must deliver), and the
read models equal a rebuild from the event stores. And with two brokers of three down, no write is
acknowledged and none acknowledged is lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from conftest import drop_database, new_database

from faults_support import (
    SOURCES,
    Client,
    Ledger,
    assert_converged,
    kafka_drained,
    metrics,
    stop_all,
    stored_events,
)
from infra import kafka
from infra.kafka.cluster import EmbeddedKafkaCluster
from services.registry import READ_MODELS
from shared.contract.topics import checkpoint_topic, dead_letter_topic, topic_for
from support import RunningStack, eventually

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(
        not kafka.available(),
        reason=f"Apache Kafka cannot run here ({kafka.missing() or 'jars not installed'}): "
        "run `python -m infra install-kafka` with Java 17+ and Maven",
    ),
]

REPLICAS, MIN_INSYNC = 3, 2
PARTITIONS = 3
# What every topic of the stack is created with, up front (the brokers create none by themselves).
TOPIC_CONFIG = {"min.insync.replicas": str(MIN_INSYNC), "retention.ms": "-1"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafkaCluster]:
    began = time.monotonic()
    for attempt in (1, 2):  # a port found free can be taken by another process before its node binds it
        running = EmbeddedKafkaCluster(tmp_path_factory.mktemp("kafka-cluster"), 3)
        try:
            running.start()
            break
        except Exception:
            running.stop()
            if attempt == 2:
                raise
    print(f"3-broker cluster whole after {time.monotonic() - began:.1f} s")
    try:
        yield running
    finally:
        running.stop()


def service_topics(prefix: str) -> list[str]:
    return [
        *(topic_for(s, prefix) for s in SOURCES),
        *(checkpoint_topic(s, prefix) for s in SOURCES),
        *(dead_letter_topic(m.consumer, prefix) for m in READ_MODELS),
    ]


async def create_topics(bootstrap: str, topics: list[str]) -> list[str]:
    """`topics` replicated to three brokers, two of them needed for a write (for the services' topics:
    created up front, as an operator does, so that a service finds them and creates none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(t, PARTITIONS, REPLICAS, topic_configs=TOPIC_CONFIG) for t in topics]
        )
        assert all(error[1] == 0 for error in response.topic_errors), response
    finally:
        await admin.close()
    return topics


async def layout(bootstrap: str, topics: list[str]) -> dict[str, tuple[set[int], str]]:
    """Per topic: the replica counts of its partitions, and its min.insync.replicas."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
        resources = [ConfigResource(ConfigResourceType.TOPIC, t, {"min.insync.replicas": None}) for t in topics]
        configs = {
            name: dict((entry[0], entry[1]) for entry in entries)
            for response in await admin.describe_configs(resources)
            for _, _, _, name, entries in response.resources
        }
    finally:
        await admin.close()
    return {
        t["topic"]: ({len(p["replicas"]) for p in t["partitions"]}, configs[t["topic"]]["min.insync.replicas"])
        for t in described
    }


async def records_on(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every message on `topic`, from the earliest offset to the end, as an outside subscriber reads
    them (no group, nothing committed)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    found: list[ConsumerRecord] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        ends = await reader.end_offsets(partitions)
        async with asyncio.timeout(30):
            while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    found += records
    finally:
        await reader.stop()
    return found


class Traffic:
    """Subjects' journeys (`Client.journey`), one after another from each of `clients` threads, until stopped."""

    def __init__(self, stack: RunningStack, ledger: Ledger, clients: int = 2):
        self.stack, self.ledger = stack, ledger
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.subjects: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(120)

    def _run(self, n: int) -> None:
        client = Client(self.stack, self.ledger)
        try:
            count = 0
            while not self.stopping.is_set():
                count += 1
                subject = f"UCT-6{n}-{count:03d}"
                self.subjects.append(subject)
                client.journey(subject)
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            client.close()

    def flowing(self, after: float, commands: int = 5) -> None:
        """Until `commands` more commands were answered 201 since `after` (time.monotonic())."""

        def answered() -> bool:
            assert not self.errors, self.errors
            with self.ledger.lock:
                return sum(s.status == 201 and s.attempted_at >= after for s in self.ledger.sent) >= commands

        eventually(answered, timeout=60, interval=0.1)


def test_a_broker_lost_or_restarted_loses_and_doubles_nothing(
    servers: tuple[str, str], cluster: EmbeddedKafkaCluster, tmp_path: Path
) -> None:
    began = time.monotonic()
    database_url = new_database(servers[0])
    prefix = f"c{uuid.uuid4().hex[:8]}."
    topics = asyncio.run(create_topics(cluster.bootstrap_servers, service_topics(prefix)))
    # Reconciliation only at start: what a consumer applies after that, it had from Kafka.
    stack = RunningStack(
        database_url,
        cluster.bootstrap_servers,
        prefix,
        tmp_path / "logs",
        keys_dir=tmp_path / "keys",
        reconcile_seconds=600,
        topic_replication=REPLICAS,
        topic_min_insync_replicas=MIN_INSYNC,
    )
    with ExitStack() as cleanup:
        cleanup.callback(drop_database, servers[0], database_url)
        cleanup.enter_context(stack)
        cleanup.callback(stop_all, stack)  # all three at once, before the stack's own (sequential) stop
        with Traffic(stack, ledger := Ledger()) as traffic:
            traffic.flowing(time.monotonic(), commands=10)
            killed_at = kill_a_leader_then_restart_it(cluster, traffic, topic_for("enrollment", prefix))
            restart_the_leader(cluster, traffic, topic_for("enrollment", prefix))
        assert not traffic.errors, traffic.errors
        check(stack, cluster, ledger, traffic, topics, killed_at)
        print(f"{len(ledger.sent)} commands; the test took {time.monotonic() - began:.0f} s")


def kill_a_leader_then_restart_it(cluster: EmbeddedKafkaCluster, traffic: Traffic, topic: str) -> float:
    """SIGKILL the leader of `topic`'s partition 0 while commands flow; commands go on with two brokers
    of three; start it again. Returns when it was killed (time.monotonic())."""
    victim = cluster.leader_of(topic, 0)
    cluster.kill_node(victim)
    killed_at = time.monotonic()
    leader = eventually(lambda: (found := cluster.leader_of(topic, 0)) not in (victim, -1) and found, 30, 0.1)
    elected_at = time.monotonic()
    print(f"node {victim} killed; node {leader} leads {topic}[0] after {elected_at - killed_at:.1f} s")
    traffic.flowing(elected_at, commands=10)
    cluster.start_node(victim)
    cluster.wait_whole()
    print(f"node {victim} back and the cluster whole {time.monotonic() - killed_at:.1f} s after the kill")
    traffic.flowing(time.monotonic())
    return killed_at


def restart_the_leader(cluster: EmbeddedKafkaCluster, traffic: Traffic, topic: str) -> None:
    """The new leader of `topic`'s partition 0 stopped gracefully and started again while commands flow
    (the kill above was a crash; this is a rolling restart's step)."""
    node = cluster.leader_of(topic, 0)
    stopped_at = time.monotonic()
    cluster.stop_node(node)
    traffic.flowing(stopped_at)
    cluster.start_node(node)
    cluster.wait_whole()
    print(f"node {node} restarted, the cluster whole after {time.monotonic() - stopped_at:.1f} s")
    traffic.flowing(time.monotonic())


def check(
    stack: RunningStack,
    cluster: EmbeddedKafkaCluster,
    ledger: Ledger,
    traffic: Traffic,
    topics: list[str],
    killed_at: float,
) -> None:
    database_url = stack.database_url
    # Every command succeeded, those sent while a broker was down included.
    assert len(ledger.sent) >= 60 and sum(s.attempted_at >= killed_at for s in ledger.sent) >= 40, len(ledger.sent)
    assert ledger.count(201) == len(ledger.sent), [(s.event_type, s.status, s.body) for s in ledger.sent]
    ledger.assert_stored_exactly(database_url, allowed=(201,))

    # The topics are as created (no service made one of them with fewer replicas).
    assert asyncio.run(layout(cluster.bootstrap_servers, topics)) == {t: ({REPLICAS}, str(MIN_INSYNC)) for t in topics}
    # Consumers resumed by themselves: every stored event applied once, from Kafka (no reconciliation
    # since start), every group at the end of every partition, and the read models equal a rebuild.
    models = assert_converged(database_url, timeout=90)
    assert set(models["followup-journey"]) == set(traffic.subjects)
    eventually(lambda: kafka_drained(stack), timeout=60)
    # Relays resumed by themselves: nothing left to publish.
    for source in SOURCES:
        eventually(lambda s=source: metrics(stack, s)[("ucart_relay_lag_events", (("service", s),))] == 0)
        eventually(lambda s=source: stack.get(s, "/ready").status_code == 200, timeout=30)

    # An outside subscriber finds every stored event on its topic, exactly once.
    stored = asyncio.run(stored_events(database_url))
    for source in SOURCES:
        records = asyncio.run(records_on(cluster.bootstrap_servers, topic_for(source, stack.prefix)))
        on_topic = Counter(dict(r.headers)["event_id"].decode() for r in records)
        expected = {str(e.event_id) for e in stored if e.source == source}
        assert expected, source
        assert set(on_topic) == expected, f"{source}: {len(expected - set(on_topic))} missing"
        doubled = {i: n for i, n in on_topic.items() if n > 1}
        assert not doubled, f"{source}: {len(doubled)} event(s) on the topic more than once"


async def send_each(bootstrap: str, topic: str, values: list[str], timeout_ms: int) -> list[str]:
    """Send each value with acks=all, one at a time; return those the cluster acknowledged. (Not the
    idempotent producer: its start needs a producer id, which no broker hands out without a quorum.)"""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, request_timeout_ms=timeout_ms
    )
    acknowledged = []
    async with asyncio.timeout(60):
        await producer.start()
    try:
        for value in values:
            try:
                async with asyncio.timeout(timeout_ms / 1000 + 5):
                    await producer.send_and_wait(topic, value.encode(), key=value.encode())
            except (KafkaError, TimeoutError):
                continue
            acknowledged.append(value)
    finally:
        await producer.stop()
    return acknowledged


def test_with_two_brokers_down_no_write_is_acknowledged_and_none_acknowledged_is_lost(
    cluster: EmbeddedKafkaCluster,
) -> None:
    """Two of three nodes SIGKILLed: no acks=all write is acknowledged (with min.insync.replicas=2, and
    on this layout the controllers' quorum is gone too); one back, writes go on; every write
    acknowledged before, during and after is on the topic."""
    bootstrap = cluster.bootstrap_servers
    topic = f"two-down-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topics(bootstrap, [topic]))
    before = asyncio.run(send_each(bootstrap, topic, [f"before-{i}" for i in range(20)], 10_000))
    assert len(before) == 20

    leader = cluster.leader_of(topic, 0)
    down = [n for n in cluster.running() if n != leader]
    for node in down:
        cluster.kill_node(node)
    during = asyncio.run(send_each(bootstrap, topic, [f"during-{i}" for i in range(3)], 3000))
    assert during == [], "a write was acknowledged with one broker of three"

    cluster.start_node(down[0])
    after = asyncio.run(send_each(bootstrap, topic, [f"after-{i}" for i in range(20)], 20_000))
    assert len(after) == 20  # two brokers: writes go on
    cluster.start_node(down[1])
    cluster.wait_whole()

    on_topic = {r.value.decode() for r in asyncio.run(records_on(bootstrap, topic))}
    assert set(before + after) <= on_topic
