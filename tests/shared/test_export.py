"""A subject's audit export from real stores, checked as an outsider would: with the checkpoints the
services signed and nothing else. An honest export passes; an edited or shortened one does not, even
when the editor recomputed the chain."""

from __future__ import annotations

import base64
from pathlib import Path

import asyncpg
import pytest

from shared.contract.checkpoint import Checkpoint
from shared.eventstore.chain import GENESIS, chain_hash
from shared.eventstore.checkpoint import read_checkpoint
from shared.eventstore.export import Export, ExportedEvent, StreamCheck, export_lines, read_export, verify_export
from shared.signing import load_verifier
from shared.time import now_utc
from tampering import STORES, SUBJECT, checkpoint, downgrade_ae, fill_stores


@pytest.fixture
async def signed(database_url, tmp_path) -> list[Checkpoint]:
    """SUBJECT's streams (enrollment: 1 event, follow-up: 2), and a checkpoint of each store."""
    await fill_stores(database_url)
    await checkpoint(database_url, tmp_path / "keys", tmp_path)
    verifier = load_verifier(tmp_path / "keys")
    return [
        read_checkpoint(line, verifier) for s in STORES for line in (tmp_path / f"{s}.jsonl").read_bytes().splitlines()
    ]


async def exported(database_url: str) -> Export:
    conn = await asyncpg.connect(database_url)
    try:
        return read_export(await export_lines(conn, SUBJECT, now_utc()))
    finally:
        await conn.close()


def problems(checks: list[StreamCheck]) -> list[str]:
    return [f"{p.kind} {p}" for c in checks for p in c.problems]


def without(export: Export, source: str, version: int | None = None) -> Export:
    kept = [e for e in export.events if not (e.source == source and version in (None, e.version))]
    return Export(export.header, kept)


def edited(export: Export, source: str, version: int, old: bytes, new: bytes, *, rehash: bool) -> Export:
    """One event's envelope (and stored state) edited; with `rehash`, its stream's chain recomputed too."""
    events = []
    for e in export.events:
        if (e.source, e.version) == (source, version):
            state = base64.b64decode(e.state).replace(old, new) if rehash else base64.b64decode(e.state)
            envelope = {**e.envelope, "payload": {**e.envelope["payload"], "grade": 1}}
            e = e.model_copy(update={"envelope": envelope, "state": base64.b64encode(state).decode()})
        events.append(e)
    if rehash:
        previous = GENESIS
        for i, e in sorted(((i, e) for i, e in enumerate(events) if e.source == source), key=lambda p: p[1].version):
            previous = chain_hash(previous, e.stream_id, e.version, e.topic, base64.b64decode(e.state))
            events[i] = e.model_copy(update={"chain_hash": previous})
    return Export(export.header, events)


def ae_version(export: Export) -> int:
    return next(e.version for e in export.events if e.source == "followup" and e.envelope["payload"]["grade"] == 2)


async def test_an_honest_export_is_whole_chained_and_signed(database_url, signed):
    export = await exported(database_url)
    assert [(e.source, e.version) for e in export.events] == [("enrollment", 1), ("followup", 1), ("followup", 2)]
    assert all(isinstance(e, ExportedEvent) and e.chain_hash for e in export.events)
    checks = verify_export(export, signed)
    assert problems(checks) == []
    assert [(c.source, c.events, c.anchored_version) for c in checks] == [("enrollment", 1, 1), ("followup", 2, 2)]


async def test_without_a_checkpoint_nothing_is_vouched_for(database_url, signed):
    found = problems(verify_export(await exported(database_url), []))
    assert len(found) == 2 and all(p.startswith("unverified") and "not signed by any checkpoint" in p for p in found)


async def test_an_edited_envelope_is_not_its_stored_event(database_url, signed):
    export = await exported(database_url)
    forged = edited(export, "followup", ae_version(export), b"", b"", rehash=False)
    assert problems(verify_export(forged, signed)) == [
        f"tampered followup: version {ae_version(export)}: its envelope is not what its stored event says"
    ]


async def test_an_edit_with_the_chain_recomputed_differs_from_the_checkpoint(database_url, signed):
    export = await exported(database_url)
    forged = edited(export, "followup", ae_version(export), b'"grade":2', b'"grade":1', rehash=True)
    (problem,) = problems(verify_export(forged, signed))
    assert problem.startswith("tampered followup: version 2: the history up to it differs from what the checkpoint")


@pytest.mark.parametrize(
    ("source", "version", "words"),
    [
        ("followup", 1, "version 1 missing: the export is not the whole stream"),
        ("followup", 2, "signed version 2, the export ends at 1"),
        ("enrollment", None, "signed version 1, the export ends at 0"),
    ],
    ids=["an event in the middle", "the last event", "a whole stream"],
)
async def test_a_dropped_event_is_missing(database_url, signed, source, version, words):
    (problem,) = problems(verify_export(without(await exported(database_url), source, version), signed))
    assert problem.startswith(f"tampered {source}") and words in problem


async def test_an_honest_export_of_a_store_rewritten_with_sql_differs_from_the_checkpoint(database_url, signed):
    conn = await asyncpg.connect(database_url)
    try:
        await downgrade_ae(conn)
    finally:
        await conn.close()
    (problem,) = problems(verify_export(await exported(database_url), signed))
    assert "differs from what the checkpoint" in problem


def test_what_is_not_an_audit_export_is_named(tmp_path: Path):
    with pytest.raises(ValueError, match="empty"):
        read_export([])
    with pytest.raises(ValueError, match="not an audit export"):
        read_export(['{"event_id": "a history line, not an export"}'])


async def test_events_passed_off_as_older_than_the_chain_are_caught(database_url, signed):
    export = await exported(database_url)
    unchained = [e.model_copy(update={"chain_hash": None}) if e.source == "followup" else e for e in export.events]
    found = problems(verify_export(Export(export.header, unchained), signed))
    assert "tampered followup: version 2: the export says it is not chained, but the checkpoint" in found[-1]
