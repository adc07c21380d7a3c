"""Every message delivered again, some twice, in reverse order across and within topics: the read
models do not change, because each consumer applies an event once (tracked by stream version)."""

from __future__ import annotations

import asyncio

from faults_support import (
    CONSUMERS,
    SOURCES,
    Ledger,
    assert_converged,
    consumer_count,
    event_counts,
    fault_stack,
    journeys,
    kafka_drained,
    produce,
    read_records,
    snapshot,
    stored_events,
    wait_caught_up,
)
from shared.contract.envelope import Envelope
from shared.contract.topics import topic_for
from support import eventually

SUBJECTS = [f"UCT-25-{n:03d}" for n in range(1, 5)]


def test_redelivered_messages_change_no_read_model(servers, tmp_path):
    with fault_stack(servers, tmp_path) as stack:
        ledger = Ledger()
        journeys(stack, ledger, SUBJECTS, aes=1, visits=("D1",))
        assert ledger.count(201) == len(ledger.sent)
        wait_caught_up(stack.database_url)
        eventually(lambda: kafka_drained(stack))  # the originals have all come through Kafka too
        before = snapshot(stack.database_url)
        stored = event_counts(stack.database_url)
        counts_before = {
            w.consumer: {o: consumer_count(stack, w.service, w.consumer, o) for o in ("applied", "duplicate", "parked")}
            for w in CONSUMERS
        }

        # Everything published, read back from the topics, and sent again as it came (signed):
        # reversed order across topics (follow-up first) and within each, every other message twice.
        copies: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        sent_per_source = {}
        for source in reversed(SOURCES):
            topic = topic_for(source, stack.prefix)
            records = asyncio.run(read_records(stack.bootstrap, topic, stored[source]))
            assert len(records) == stored[source]  # each stored event published once, so far
            assert {Envelope.model_validate_json(r.value).event_id for r in records} == {
                e.event_id for e in asyncio.run(stored_events(stack.database_url)) if e.source == source
            }
            again = [
                (topic, r.key, r.value, list(r.headers))
                for i, r in enumerate(reversed(records))
                for _ in range(1 + i % 2)
            ]
            copies += again
            sent_per_source[source] = len(again)
        asyncio.run(produce(stack.bootstrap, copies))

        for watched in CONSUMERS:  # every copy handled, as a duplicate
            target = counts_before[watched.consumer]["duplicate"] + sum(sent_per_source[s] for s in watched.sources)
            eventually(lambda w=watched, t=target: consumer_count(stack, w.service, w.consumer, "duplicate") >= t)
        for watched in CONSUMERS:
            for outcome in ("applied", "parked"):  # no copy was applied, none was refused
                assert (
                    consumer_count(stack, watched.service, watched.consumer, outcome)
                    == counts_before[watched.consumer][outcome]
                ), (watched.consumer, outcome)

        assert snapshot(stack.database_url) == before
        assert event_counts(stack.database_url) == stored
        assert_converged(stack.database_url)
