"""Messages that can never be processed, sent to a real topic of a running stack: each goes to every
consumer's dead-letter topic with the reason, is counted, and does not block its partition."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from faults_support import (
    Client,
    Ledger,
    assert_converged,
    consumer_count,
    fault_stack,
    headers,
    produce,
    read_records,
)
from support import eventually

from shared.contract.envelope import Envelope
from shared.contract.topics import dead_letter_topic, topic_for

SUBJECT = "UCT-27-001"  # the key of the poison messages, and then of a real enrolment
CONSUMERS = {"treatment": ["treatment-subject-facts"], "followup": ["followup-subject-facts", "followup-journey"]}


def envelope(**changes) -> bytes:
    now = datetime.now(UTC)
    fields = dict(
        event_id=uuid.uuid4(), event_type="Enrolled", schema_version=1, subject_id=SUBJECT, source="enrollment",
        stream_version=1, occurred_at=now - timedelta(days=3), recorded_at=now,
        recorded_by={"user_id": "intruder", "role": "coordinator"}, correlation_id=uuid.uuid4(),
        protocol_version="test@1",
        payload={"site_id": "27", "consent_signed_on": "2026-01-01", "year_of_birth": 1970, "sex": "F",
                 "disease_status": "relapsed", "cd19_positive": True},
    )
    return Envelope(**{**fields, **changes}).model_dump_json().encode()


POISON = {
    "invalid JSON": b'{"event_type": "Enrolled", ',
    "unknown event type": envelope(event_type="Teleported"),
    "unknown schema version": envelope(schema_version=99),
    "invalid payload": envelope(payload={"site_id": "27", "consent_signed_on": "2026-01-01", "year_of_birth": 1800,
                                         "sex": "X", "disease_status": "relapsed", "cd19_positive": True}),
}


def test_poison_messages_are_dead_lettered_counted_and_do_not_block(servers, tmp_path):
    # Reconciliation only at start: the valid event sent later can only arrive through Kafka.
    with fault_stack(servers, tmp_path, reconcile_seconds=600) as stack:
        for service in ("enrollment", "treatment", "followup"):  # topics made, partitions assigned
            eventually(lambda: stack.get(service, "/ready").status_code == 200)
        topic = topic_for("enrollment", stack.prefix)
        asyncio.run(produce(stack.bootstrap, [(topic, SUBJECT.encode(), value) for value in POISON.values()]))

        # A valid event after them, on the same partition (same key): the real enrolment.
        ledger = Ledger()
        client = Client(stack, ledger)
        assert client.enrol(SUBJECT).status == 201
        assert client.lymphodepletion(SUBJECT, 8).status == 201  # treatment learned it from Kafka
        client.close()
        journey = eventually(lambda: (r := stack.get("followup", f"/subjects/{SUBJECT}/journey")).status_code == 200
                             and r.json())
        assert journey["site_id"] == "01" and journey["enrolled_on"]  # the real one, not the intruder's

        on_topic = asyncio.run(read_records(stack.bootstrap, topic, len(POISON) + 1))
        assert len(on_topic) == len(POISON) + 1
        assert len({r.partition for r in on_topic}) == 1 and on_topic[-1].value not in POISON.values()

        for service, consumers in CONSUMERS.items():
            for consumer in consumers:
                parked = asyncio.run(read_records(stack.bootstrap, dead_letter_topic(consumer, stack.prefix),
                                                  len(POISON)))
                assert [r.value for r in parked] == list(POISON.values()), consumer
                for record, (what, _) in zip(parked, POISON.items(), strict=True):
                    meta = headers(record)
                    assert meta["dead_letter_reason"], what
                    assert meta["original_topic"] == topic and meta["original_partition"] == str(on_topic[0].partition)
                assert consumer_count(stack, service, consumer, "dead-lettered") == len(POISON)
                assert consumer_count(stack, service, consumer, "applied") >= 1
        reasons = [headers(r)["dead_letter_reason"] for r in parked]
        assert "Teleported" in reasons[1] and "99" in reasons[2] and "year_of_birth" in reasons[3]

        assert_converged(stack.database_url, dead_letters={"treatment": len(POISON), "followup": 2 * len(POISON)})
