"""A service process killed (SIGKILL) while commands are in flight, then started again."""

from __future__ import annotations

import asyncio
import time
from functools import partial

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition

from faults_support import (
    Client,
    Ledger,
    assert_converged,
    consumer_count,
    fault_stack,
    read_records,
    restart,
    run_in_threads,
)
from shared.contract.topics import topic_for
from support import eventually

SUBJECTS = [f"UCT-21-{n:03d}" for n in range(1, 9)]
SUBJECT = "UCT-21-101"
AUTO_COMMIT_INTERVAL = 5.0


def test_followup_killed_mid_flight_loses_and_doubles_nothing(servers, tmp_path):
    with fault_stack(servers, tmp_path) as stack:
        ledger = Ledger()
        killed_after: list[int] = []

        def subject(subject_id: str) -> None:
            client = Client(stack, ledger)
            try:
                client.journey(subject_id, aes=2, visits=("D1", "D4"))
            finally:
                client.close()

        def kill_followup_mid_way() -> None:
            # Follow-up takes commands and consumes all three topics: kill it once it has answered
            # a few commands, while the others are on their way.
            eventually(lambda: ledger.count(201, "followup") >= 4, timeout=60, interval=0.02)
            stack.group["followup"].kill()
            killed_after.append(ledger.count(201, "followup"))
            time.sleep(1)  # stay down for a moment: commands sent now find nobody
            restart(stack, "followup")

        run_in_threads(kill_followup_mid_way, *(partial(subject, s) for s in SUBJECTS), workers=len(SUBJECTS) + 1)

        followup_commands = len(SUBJECTS) * 4
        assert killed_after and killed_after[0] < followup_commands, "the kill came after every command"
        assert ledger.unreachable > 0, "no command met the killed service"
        # Every command got an answer (201), or its connection broke when the process died.
        assert ledger.count(201) + ledger.count(None) == len(ledger.sent) == len(SUBJECTS) * 9
        ledger.assert_stored_exactly(stack.database_url, allowed=(201, None))

        models = assert_converged(stack.database_url)
        journeys = models["followup-journey"]
        assert set(journeys) == set(SUBJECTS)
        for s in SUBJECTS:
            assert len(journeys[s]["lymphodepletion_days"]) == 3 and journeys[s]["infused_at"]
            answered = [
                x for x in ledger.sent if x.subject_id == s and x.event_type == "AEReported" and x.status == 201
            ]
            assert {x.key for x in answered} <= set(journeys[s]["adverse_events"])
        infused = models["followup-subject-facts"]
        assert all(infused[s]["infused_on"] and infused[s]["enrolled_on"] for s in SUBJECTS)
        assert all(models["treatment-subject-facts"][s]["enrolled_on"] for s in SUBJECTS)


def test_an_offset_is_committed_only_after_the_effect(servers, tmp_path):
    """Follow-up killed while its journey consumer is inside a message (held up by a table lock):
    the message's offset was not committed, so the restarted consumer gets it again."""
    # Reconciliation only at start: what the journey gets after that, it gets from Kafka.
    with fault_stack(servers, tmp_path, reconcile_seconds=600) as stack:
        with psycopg.connect(stack.database_url, autocommit=False) as blocker:
            blocker.execute("LOCK TABLE followup.journeys IN EXCLUSIVE MODE")  # reads pass, the fold's upsert waits
            client = Client(stack, Ledger())
            assert client.enrol(SUBJECT).status == 201
            client.close()
            eventually(lambda: waiting_on_journeys(stack.database_url))  # the consumer is inside the message
            # Held there longer than a Kafka client's auto-commit interval (aiokafka: 5 s), which
            # would commit what it has fetched whether or not the handler got through.
            time.sleep(AUTO_COMMIT_INTERVAL + 1)
            stack.group["followup"].kill()

            topic = topic_for("enrollment", stack.prefix)
            (message,) = [r for r in asyncio.run(read_records(stack.bootstrap, topic, 1)) if r.key == SUBJECT.encode()]
            committed = asyncio.run(committed_offset(stack, "followup-journey", message.partition))
            assert committed <= message.offset, "the offset was committed before the effect"

            restart(stack, "followup")
            blocker.rollback()  # release the lock
        eventually(
            lambda: (
                consumer_count(stack, "followup", "followup-journey", "applied")
                + consumer_count(stack, "followup", "followup-journey", "duplicate")
                >= 1
            )
        )  # delivered again
        models = assert_converged(stack.database_url)
        assert models["followup-journey"][SUBJECT]["enrolled_on"]


def waiting_on_journeys(database_url: str) -> bool:
    with psycopg.connect(database_url) as conn:
        return bool(
            conn.execute("""SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
                                    AND query ILIKE '%INTO followup.journeys%'""").fetchone()[0]
        )


async def committed_offset(stack, consumer: str, partition: int) -> int:
    reader = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, group_id=f"{stack.prefix}ucart-{consumer}", enable_auto_commit=False
    )
    await reader.start()
    try:
        tp = TopicPartition(topic_for("enrollment", stack.prefix), partition)
        reader.assign([tp])
        return await reader.committed(tp) or 0
    finally:
        await reader.stop()
