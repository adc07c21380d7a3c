"""Messages that can never be processed, sent to a real topic of a running stack, and an event in a
store that no read model can take: each is parked (a row with the reason, every consumer's
dead-letter topic, a count), does not block its partition, and an operator can list, retry and
dismiss it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka.partitioner import murmur2

from faults_support import (
    Client,
    Ledger,
    assert_converged,
    consumer_count,
    fault_stack,
    headers,
    read_records,
    restart,
)
from shared.contract.envelope import Envelope
from shared.contract.topics import SOURCES, dead_letter_topic, topic_for
from support import OTHER, POISONED, eventually, poisoned_followup_store, produce_signed, ucart

SUBJECT = "UCT-27-001"  # the key of the poison messages, and then of a real enrolment
CONSUMERS = {"treatment": ["treatment-subject-facts"], "followup": ["followup-subject-facts", "followup-journey"]}


def envelope(**changes) -> bytes:
    now = datetime.now(UTC)
    fields = dict(
        event_id=uuid.uuid4(),
        event_type="Enrolled",
        schema_version=1,
        subject_id=SUBJECT,
        source="enrollment",
        stream_version=1,
        occurred_at=now - timedelta(days=3),
        recorded_at=now,
        recorded_by={"user_id": "intruder", "role": "coordinator"},
        correlation_id=uuid.uuid4(),
        protocol_version="test@1",
        payload={
            "site_id": "27",
            "consent_signed_on": "2026-01-01",
            "year_of_birth": 1970,
            "sex": "F",
            "disease_status": "relapsed",
            "cd19_positive": True,
        },
    )
    return Envelope(**{**fields, **changes}).model_dump_json().encode()


POISON = {
    "invalid JSON": b'{"event_type": "Enrolled", ',
    "unknown event type": envelope(event_type="Teleported"),
    "unknown schema version": envelope(schema_version=99),
    "invalid payload": envelope(
        payload={
            "site_id": "27",
            "consent_signed_on": "2026-01-01",
            "year_of_birth": 1800,
            "sex": "X",
            "disease_status": "relapsed",
            "cd19_positive": True,
        }
    ),
}


def test_poison_messages_are_dead_lettered_counted_and_do_not_block(servers, tmp_path):
    # Reconciliation only at start: the valid event sent later can only arrive through Kafka.
    with fault_stack(servers, tmp_path, reconcile_seconds=600) as stack:
        for service in SOURCES:  # topics made, partitions assigned
            eventually(lambda service=service: stack.get(service, "/ready").status_code == 200)
        topic = topic_for("enrollment", stack.prefix)
        # Signed by the enrollment key, as a buggy enrollment service would send them: parked for what they hold.
        poison = [(topic, SUBJECT.encode(), value) for value in POISON.values()]
        asyncio.run(produce_signed(stack.bootstrap, stack.keys_dir, poison))

        # A valid event after them, on the same partition (same key): the real enrolment.
        ledger = Ledger()
        client = Client(stack, ledger)
        assert client.enrol(SUBJECT).status == 201
        assert client.lymphodepletion(SUBJECT, 8).status == 201  # treatment learned it from Kafka
        client.close()
        # The journey may start from the lymphodepletion (another topic): wait for the enrolment itself.
        journey = eventually(
            lambda: (
                (r := stack.get("followup", f"/subjects/{SUBJECT}/journey")).status_code == 200
                and r.json()["enrolled_on"]
                and r.json()
            )
        )
        assert journey["site_id"] == "01"  # the real one, not the intruder's

        on_topic = asyncio.run(read_records(stack.bootstrap, topic, len(POISON) + 1))
        assert len(on_topic) == len(POISON) + 1
        assert len({r.partition for r in on_topic}) == 1 and on_topic[-1].value not in POISON.values()

        for service, consumers in CONSUMERS.items():
            for consumer in consumers:
                parked = asyncio.run(
                    read_records(stack.bootstrap, dead_letter_topic(consumer, stack.prefix), len(POISON))
                )
                assert [r.value for r in parked] == list(POISON.values()), consumer
                for record, (what, _) in zip(parked, POISON.items(), strict=True):
                    meta = headers(record)
                    assert meta["dead_letter_reason"], what
                    assert meta["original_topic"] == topic and meta["original_partition"] == str(on_topic[0].partition)
                assert consumer_count(stack, service, consumer, "parked") == len(POISON)
                assert consumer_count(stack, service, consumer, "applied") >= 1
        reasons = [headers(r)["dead_letter_reason"] for r in parked]
        assert "Teleported" in reasons[1] and "99" in reasons[2] and "year_of_birth" in reasons[3]

        assert_converged(stack.database_url, parked={c: len(POISON) for cs in CONSUMERS.values() for c in cs})


def same_partition_as(subject: str, partitions: int) -> str:
    """Another subject code whose events land on the same partition as `subject`'s."""
    target = murmur2(subject.encode()) & 0x7FFFFFFF
    return next(
        code
        for n in range(2, 999)
        if (murmur2((code := f"UCT-31-{n:03d}").encode()) & 0x7FFFFFFF) % partitions == target % partitions
        and code != OTHER
    )


def test_a_poison_event_in_a_store_is_parked_and_an_operator_deals_with_it(servers, tmp_path):
    # Reconciliation waits: the poison reaches the consumer from Kafka, whose messages the metric counts.
    with fault_stack(servers, tmp_path, reconcile_seconds=120) as stack:
        for service in SOURCES:
            eventually(lambda service=service: stack.get(service, "/ready").status_code == 200)
        # Stored before input was strict: an AE term with a NUL, which the journey's jsonb refuses.
        # The running relay publishes it like any other event.
        poisoned_followup_store(stack.database_url)
        neighbour = same_partition_as(POISONED, stack.settings.topic_partitions)
        client = Client(stack, Ledger())
        assert client.enrol(neighbour).status == 201
        client.close()

        def projected(subject: str) -> dict:
            response = stack.get("followup", f"/subjects/{subject}/journey")
            return response.status_code == 200 and response.json()

        assert eventually(lambda: projected(neighbour))["enrolled_on"]

        def terms(journey: dict) -> list[str]:
            return sorted(ae["report"]["term"] for ae in journey["adverse_events"])

        assert terms(eventually(lambda: projected(POISONED))) == ["Fever"]  # went on without the poison
        listed = eventually(
            lambda: POISONED in (r := ucart("parked", "list", database_url=stack.database_url)).stdout and r
        )
        assert listed.returncode == 0 and "followup-journey" in listed.stdout and "1 parked event(s)" in listed.stdout
        assert consumer_count(stack, "followup", "followup-journey", "parked") == 1

        compared = ucart("compare", database_url=stack.database_url)
        assert compared.returncode == 0, compared.stdout + compared.stderr
        assert "could not be applied" in compared.stdout and "equals the live projection" in compared.stdout

        # A service that must rebuild its read model at start still starts, and parks the poison again.
        stack.group["followup"].stop()
        asyncio.run(
            execute(
                stack.database_url,
                "UPDATE followup.projection_versions SET version = 'old' WHERE projection = 'followup-journey'",
            )
        )
        restart(stack, "followup")
        assert terms(projected(POISONED)) == ["Fever"] and projected(neighbour) and projected(OTHER)
        assert_converged(stack.database_url, parked={"followup-journey": 1})

        retried = ucart("parked", "retry", "--all", database_url=stack.database_url)
        assert retried.returncode == 1 and "still parked" in retried.stdout  # the term still holds the NUL
        dismissed = ucart(
            "parked",
            "dismiss",
            "--all",
            "--note",
            "garbled term; the site re-enters the AE",
            database_url=stack.database_url,
        )
        assert dismissed.returncode == 0 and "Dismissed 1" in dismissed.stdout
        assert "0 parked event(s)" in ucart("parked", "list", database_url=stack.database_url).stdout


async def execute(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
