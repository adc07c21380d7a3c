"""Forged messages on every topic of a running stack: unsigned, signed by a key no service holds,
signed by another service's key, and a genuine message whose value was altered on the way. Each is
parked with a "signature" reason and changes no read model (the journey, every service's facts); none
hides or blocks the subject's real next event on its topic; and an operator's retry verifies it again
and leaves it parked."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import ConsumerRecord
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from faults_support import (
    CONSUMERS,
    Client,
    Ledger,
    assert_converged,
    fault_stack,
    produce,
    read_records,
    snapshot,
    wait_caught_up,
)
from shared.contract.envelope import Envelope
from shared.contract.topics import SOURCES, Source, topic_for
from shared.signing import Signer, key_id
from support import INFUSION, RunningStack, at, eventually, signature_headers, ucart

SUBJECT = "UCT-33-001"
# Per topic, an event that would change the read models, at the stream version the real next one takes
# (enrolment; three lymphodepletion days and the infusion; one AE).
FORGED: dict[Source, tuple[str, int, dict]] = {
    "enrollment": ("ConsentWithdrawn", 2, {"withdrawal_reason": "never asked for"}),
    "treatment": ("InfusionCorrected", 5, {**INFUSION, "dose_cells_per_kg": 9e8}),
    "followup": ("SubjectDied", 2, {"primary_cause": "unknown", "details": "never happened"}),
}
KINDS = ("not signed", "unknown key", "not of", "does not match")  # in the order each topic gets them

Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def forged_value(source: Source) -> bytes:
    event_type, version, payload = FORGED[source]
    now = datetime.now(UTC)
    return (
        Envelope(
            event_id=uuid.uuid4(),
            event_type=event_type,
            schema_version=1,
            subject_id=SUBJECT,
            source=source,
            stream_version=version,
            occurred_at=now - timedelta(days=2),
            recorded_at=now,
            recorded_by={"user_id": "intruder", "role": "coordinator"},
            correlation_id=uuid.uuid4(),
            reason="forged" if event_type == "InfusionCorrected" else None,
            protocol_version="UCART19-BALL-01@1.1",
            payload=payload,
        )
        .model_dump_json()
        .encode()
    )


def forgeries(stack: RunningStack, source: Source, genuine: ConsumerRecord) -> list[Message]:
    """Four forgeries of the same kind of event on `source`'s topic, one per KINDS."""
    topic, key = topic_for(source, stack.prefix), SUBJECT.encode()
    private = Ed25519PrivateKey.generate()
    stranger = Signer(key_id(source, private.public_key()), private)  # looks like the service's, is no one's
    another = next(s for s in SOURCES if s != source)
    unsigned, by_stranger, by_another, altered = (forged_value(source) for _ in KINDS)
    return [
        (topic, key, unsigned, []),
        (topic, key, by_stranger, [(k, v.encode()) for k, v in stranger.headers(by_stranger).items()]),
        (topic, key, by_another, signature_headers(stack.keys_dir, another, by_another)),
        (topic, key, altered, list(genuine.headers)),  # a real message's signature, another value
    ]


def parked_rows(database_url: str) -> list[asyncpg.Record]:
    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            rows = []
            for schema in SOURCES:
                rows += await conn.fetch(
                    f"""SELECT consumer, topic, reason, in_store, resolved_at, key_id FROM {schema}.parked_events
                        ORDER BY id"""
                )
            return rows
        finally:
            await conn.close()

    return asyncio.run(read())


def test_a_forged_message_on_each_topic_is_parked_and_changes_no_read_model(servers, tmp_path):
    # Reconciliation only at start: the real events sent later can only arrive through Kafka.
    with fault_stack(servers, tmp_path, reconcile_seconds=600) as stack:
        client = Client(stack, Ledger())
        client.journey(SUBJECT, aes=1, visits=())  # enrollment v1, treatment v1-4, followup v1
        client.close()
        wait_caught_up(stack.database_url)
        before = snapshot(stack.database_url)

        messages: list[Message] = []
        for source, count in (("enrollment", 1), ("treatment", 4), ("followup", 1)):
            records = asyncio.run(read_records(stack.bootstrap, topic_for(source, stack.prefix), count))
            assert len(records) == count and records[-1].key == SUBJECT.encode()
            messages += forgeries(stack, source, records[-1])
        asyncio.run(produce(stack.bootstrap, messages))

        # Every consumer parks every forgery on each topic it reads, and applies none.
        expected = {w.consumer: len(KINDS) * len(w.sources) for w in CONSUMERS}

        def all_parked() -> bool:
            rows = parked_rows(stack.database_url)
            return {c: sum(r["consumer"] == c for r in rows) for c in expected} == expected

        eventually(all_parked)
        rows = parked_rows(stack.database_url)
        assert all(r["reason"].startswith("signature: ") and not r["in_store"] for r in rows)
        for watched in CONSUMERS:
            for source in watched.sources:
                reasons = [
                    r["reason"]
                    for r in rows
                    if r["consumer"] == watched.consumer and r["topic"] == topic_for(source, stack.prefix)
                ]
                assert len(reasons) == len(KINDS) and all(
                    kind in reason for kind, reason in zip(KINDS, reasons, strict=True)
                ), (watched.consumer, source, reasons)
        assert snapshot(stack.database_url) == before

        # The subject's real next events, on each topic, at the versions the forgeries claimed.
        assert client_visit(stack) == 201
        corrected = {**INFUSION, "dose_cells_per_kg": 2e7}
        answer = stack.post(
            "treatment",
            f"/subjects/{SUBJECT}/infusion-corrections",
            {"occurred_at": at(3), "reason": "dose transcribed wrongly", "payload": corrected},
        )
        assert answer.status_code == 201, answer.text
        withdrawn = stack.command(
            "enrollment", f"/subjects/{SUBJECT}/consent-withdrawal", at(1), {"withdrawal_reason": "moved away"}
        )
        assert withdrawn.status_code == 201, withdrawn.text

        models = assert_converged(stack.database_url, parked=expected)
        journey = models["followup-journey"][SUBJECT]
        assert journey["visits_completed"].keys() == {"D1"} and journey["died_on"] is None
        assert journey["dose_cells_per_kg"] == 2e7 and journey["withdrawn_on"] == at(1)[:10]

        # A retry verifies each again, with the keys configured now, and refuses it again.
        settled = snapshot(stack.database_url)
        retried = ucart("parked", "retry", "--all", database_url=stack.database_url, UCART_KEYS_DIR=str(stack.keys_dir))
        assert retried.returncode == 1 and "still parked" in retried.stdout, retried.stdout + retried.stderr
        after = parked_rows(stack.database_url)
        assert len(after) == len(rows) and all(r["resolved_at"] is None for r in after)
        assert [r["reason"] for r in after] == [r["reason"] for r in rows]
        assert snapshot(stack.database_url) == settled


def client_visit(stack: RunningStack) -> int | None:
    client = Client(stack, Ledger())
    try:
        return client.visit(SUBJECT, "D1").status
    finally:
        client.close()
