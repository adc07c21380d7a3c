"""The broker killed and restarted while commands flow: the relays fail, back off and resume where the
broker stopped acknowledging, so an outside subscriber gets each event at most twice (on either broker)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from aiokafka import AIOKafkaConsumer
from aiokafka.partitioner import DefaultPartitioner

from faults_support import (
    SOURCES,
    Client,
    Ledger,
    assert_converged,
    fault_stack,
    headers,
    journeys,
    metrics,
    own_broker,
    partitions_of,
    read_records,
)
from shared.contract.topics import topic_for
from support import eventually

BEFORE = [f"UCT-24-{n:03d}" for n in range(1, 7)]  # their enrolments land on each of the 3 partitions
DURING = [f"UCT-24-{n:03d}" for n in range(11, 15)]
SEND_TIMEOUT = 10  # the services' Kafka request timeout: a send to a dead broker fails after this


def test_a_broker_restart_while_commands_flow_sends_each_event_at_most_twice(servers, tmp_path):
    with own_broker(tmp_path) as broker, fault_stack(servers, tmp_path, bootstrap=broker.bootstrap_servers) as stack:
        ledger = Ledger()
        partitions = list(range(stack.settings.topic_partitions))
        assert {DefaultPartitioner()(s.encode(), partitions, partitions) for s in BEFORE} == {0, 1, 2}
        journeys(stack, ledger, BEFORE, aes=0, visits=())
        relays_caught_up(stack)  # each relay knows the offsets the broker gave its events
        before = {s: relay_metrics(stack, s) for s in SOURCES}

        broker.kill()
        client = Client(stack, ledger, retry_for=0)
        try:
            for subject in DURING:  # an enrolment needs nothing from Kafka
                client.enrol(subject)
        finally:
            client.close()
        time.sleep(SEND_TIMEOUT + 3)  # the enrollment relay's send fails, and it backs off
        with ThreadPoolExecutor(1) as pool:
            flowing = pool.submit(journeys, stack, ledger, DURING, enrol=False)
            time.sleep(1)
            broker.start()  # on the same port (Tansu: empty), while treatment and follow-up commands come in
            flowing.result()
        assert ledger.count(201) == len(ledger.sent), [s.body for s in ledger.sent if s.status != 201]
        assert_converged(stack.database_url)

        relays_caught_up(stack)
        after = {s: relay_metrics(stack, s) for s in SOURCES}
        if stack.settings.tansu:
            # The enrollment relay's send failed and it backed off. It knew every partition's offset:
            # Tansu's first answer after its restart showed it was reset, and the relay sent its batch
            # again. (Apache Kafka keeps its log, and its idempotent producer may hold a send until the
            # broker is back, within its timeout, so that no failure reaches the relay.)
            assert after["enrollment"]["errors_total"] > before["enrollment"]["errors_total"]
            assert after["enrollment"]["republished_total"] > before["enrollment"]["republished_total"]

        # An outside subscriber reads what the restarted broker holds: nothing more than twice.
        copies = Counter()
        for source in SOURCES:
            topic = topic_for(source, stack.prefix)
            records = asyncio.run(read_records(stack.bootstrap, topic, asyncio.run(size(stack.bootstrap, topic))))
            copies.update(headers(r)["event_id"] for r in records)
        assert copies and max(copies.values()) <= 2, copies.most_common(3)


def relays_caught_up(stack) -> None:
    for source in SOURCES:
        eventually(lambda source=source: relay_metrics(stack, source)["lag_events"] == 0, timeout=30)


def relay_metrics(stack, service: str) -> dict[str, float]:
    """ucart_relay_<name> of a service, by name (lag_events, errors_total, republished_total...)."""
    prefix = "ucart_relay_"
    return {
        name.removeprefix(prefix): value
        for (name, labels), value in metrics(stack, service).items()
        if name.startswith(prefix) and labels == (("service", service),)
    }


async def size(bootstrap: str, topic: str) -> int:
    """How many messages the topic holds (offsets start at 0 on a broker restarted empty)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await reader.start()
    try:
        partitions = await partitions_of(bootstrap, [topic])
        return sum((await reader.end_offsets(partitions)).values()) if partitions else 0
    finally:
        await reader.stop()
