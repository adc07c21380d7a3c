"""Events published but not yet consumed are lost with a broker that keeps nothing on disk (Tansu): the
reconciliation against the event stores brings them back, once."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from faults_support import (
    SOURCES,
    Ledger,
    assert_converged,
    event_counts,
    fault_stack,
    journeys,
    own_broker,
    read_records,
    restart,
)
from shared.contract.topics import topic_for

SUBJECTS = [f"UCT-23-{n:03d}" for n in range(1, 5)]

pytestmark = pytest.mark.broker(
    "tansu", why="Apache Kafka keeps its log across a restart (test_broker_restarted_with_its_log.py)"
)


def test_what_the_broker_lost_comes_back_from_the_event_stores(servers, tmp_path):
    with own_broker(tmp_path) as broker, fault_stack(servers, tmp_path, bootstrap=broker.bootstrap_servers) as stack:
        stack.group["followup"].kill()  # the journey projection consumes nothing for now
        ledger = Ledger()
        journeys(stack, ledger, SUBJECTS, aes=0, visits=())  # treatment learns enrolments from Kafka
        assert ledger.count(201) == len(ledger.sent) == len(SUBJECTS) * 5
        stored = event_counts(stack.database_url)
        assert stored == {"enrollment": 4, "treatment": 16, "followup": 0}
        for source in ("enrollment", "treatment"):  # published, and so far only on the broker
            topic = topic_for(source, stack.prefix)
            assert len(asyncio.run(read_records(stack.bootstrap, topic, stored[source]))) == stored[source]

        event_topics = [topic_for(s, stack.prefix) for s in SOURCES]
        assert asyncio.run(records_kept(stack.bootstrap, event_topics)) >= stored["enrollment"] + stored["treatment"]
        broker.kill()
        broker.start()
        # Everything published is gone (a service's client may already have re-created a topic, empty).
        assert asyncio.run(records_kept(stack.bootstrap, event_topics)) == 0, "the broker kept records"

        restart(stack, "followup")
        models = assert_converged(stack.database_url)
        assert set(models["followup-journey"]) == set(models["followup-subject-facts"]) == set(SUBJECTS)
        for s in SUBJECTS:
            journey = models["followup-journey"][s]
            assert journey["enrolled_on"] and len(journey["lymphodepletion_days"]) == 3 and journey["infused_at"]
            assert models["followup-subject-facts"][s]["infused_on"]
        assert event_counts(stack.database_url) == stored


async def records_kept(bootstrap: str, topics: list[str]) -> int:
    """How many records the broker holds on those topics (those that exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = [t for t in topics if t in set(await admin.list_topics())]
        described = await admin.describe_topics(existing) if existing else []
    finally:
        await admin.close()
    partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
    if not partitions:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        start, end = await consumer.beginning_offsets(partitions), await consumer.end_offsets(partitions)
        return sum(end[tp] - start[tp] for tp in partitions)
    finally:
        await consumer.stop()
