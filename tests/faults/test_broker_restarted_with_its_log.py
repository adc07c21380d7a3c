"""Apache Kafka stopped and started again on the same data directory keeps what a subscriber relies on:
every topic with its partitions, every offset, every consumer group's committed offsets. An outside
subscriber reading every topic from the earliest offset then sees every stored event once, in stream
order per subject, and a projection replayed from the topics equals the live one."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from faults_support import (
    SOURCES,
    Ledger,
    assert_converged,
    fault_stack,
    journeys,
    kafka_drained,
    own_broker,
    partitions_of,
    stored_events,
)
from infra import replay
from shared import db
from shared.config import Settings
from shared.contract.envelope import Envelope
from shared.contract.topics import topic_for
from shared.signing import Verifier, load_verifier
from support import eventually

BEFORE = [f"UCT-24-{n:03d}" for n in range(1, 4)]
AFTER = [f"UCT-24-{n:03d}" for n in range(11, 13)]

pytestmark = pytest.mark.broker("kafka", why="Tansu keeps nothing on disk (see test_broker_restarted_empty.py)")


def test_a_restarted_broker_keeps_topics_offsets_and_groups_and_replays_every_event_once(servers, tmp_path):
    with own_broker(tmp_path) as broker, fault_stack(servers, tmp_path, bootstrap=broker.bootstrap_servers) as stack:
        ledger = Ledger()
        journeys(stack, ledger, BEFORE, aes=1, visits=("D1",))
        assert ledger.count(201) == len(ledger.sent)
        assert_converged(stack.database_url)
        eventually(lambda: kafka_drained(stack))
        before = asyncio.run(broker_state(stack.bootstrap, stack.prefix))
        assert before.groups and all(before.offsets.values()), before

        broker.stop()  # a clean shutdown: the next start finds its log whole
        broker.start()
        # (the group coordinator answers once it has loaded the committed offsets from its log)
        eventually(lambda: asyncio.run(broker_state(stack.bootstrap, stack.prefix)) == before, timeout=30)

        # The services carry on with the same broker: new events on top of the old, no topic re-created.
        journeys(stack, ledger, AFTER, aes=1, visits=("D1",))
        assert ledger.count(201) == len(ledger.sent)
        models = assert_converged(stack.database_url)
        assert set(models["followup-journey"]) == set(BEFORE + AFTER)
        stored = asyncio.run(stored_events(stack.database_url))
        eventually(lambda: sum(asyncio.run(broker_state(stack.bootstrap, stack.prefix)).ends().values()) >= len(stored))

        # An outside subscriber, from the earliest offset: each stored event once, in stream order.
        seen = asyncio.run(read_everything(stack.bootstrap, [topic_for(s, stack.prefix) for s in SOURCES]))
        copies = Counter(e.event_id for e in seen)
        assert {e.event_id for e in stored} == set(copies) and max(copies.values()) == 1
        versions: dict[tuple[str, str], list[int]] = defaultdict(list)
        for e in seen:
            versions[e.source, e.subject_id].append(e.stream_version)
        assert all(v == list(range(1, len(v) + 1)) for v in versions.values()), versions

        # `ucart compare --from-kafka`: every projection replayed from the topics equals the live one.
        verifier = load_verifier(stack.keys_dir)
        for name in ("journey", "treatment-facts", "followup-facts"):
            compared = asyncio.run(compare_with_kafka(stack.database_url, name, stack.settings, verifier))
            assert compared.differences == [] and compared.parked == [], name


class BrokerState:
    """Topics of a test's prefix with their partition counts, each partition's end offset, and each
    consumer group's committed offsets."""

    def __init__(self, partitions: dict[str, int], offsets: dict[TopicPartition, int], groups: dict[str, dict]):
        self.partitions, self.offsets, self.groups = partitions, offsets, groups

    def ends(self) -> dict[TopicPartition, int]:
        return {tp: end for tp, end in self.offsets.items() if tp.topic.endswith(".events")}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BrokerState) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"BrokerState({vars(self)})"


async def broker_state(bootstrap: str, prefix: str) -> BrokerState:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        described = await admin.describe_topics(topics)
        groups = sorted(g for g, _ in await admin.list_consumer_groups() if g.startswith(prefix))
        committed = {g: await admin.list_consumer_group_offsets(g) for g in groups}
    finally:
        await admin.close()
    partitions = {d["topic"]: len(d["partitions"]) for d in described}
    tps = [TopicPartition(t, p) for t, n in partitions.items() for p in range(n)]
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        ends = await reader.end_offsets(tps)
    finally:
        await reader.stop()
    offsets = {tp: ends[tp] for tp in tps if ends[tp]}
    return BrokerState(partitions, offsets, {g: {tp: m.offset for tp, m in o.items()} for g, o in committed.items()})


async def read_everything(bootstrap: str, topics: list[str]) -> list[Envelope]:
    """Every message of the topics, from the earliest offset to the end, in offset order per partition."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await reader.start()
    try:
        partitions = await partitions_of(bootstrap, topics)
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        end = await reader.end_offsets(partitions)
        found: list[Envelope] = []
        while [tp for tp in partitions if await reader.position(tp) < end[tp]]:
            for records in (await reader.getmany(timeout_ms=500)).values():
                found += [Envelope.model_validate_json(r.value) for r in records]
        return found
    finally:
        await reader.stop()


async def compare_with_kafka(database_url: str, name: str, settings: Settings, verifier: Verifier) -> replay.Comparison:
    pool = await db.create_pool(database_url)
    try:
        return await replay.compare_with_kafka(pool, name, settings, verifier)
    finally:
        await pool.close()
