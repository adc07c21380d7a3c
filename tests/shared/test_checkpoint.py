"""Checkpoints on real event stores: each rewrite the chain alone misses is caught against one, and a
checkpoint that is not what its service signed is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import asyncpg
import pytest

from shared.contract.checkpoint import canonical, signed_bytes
from shared.eventstore import subject_uuid
from shared.eventstore.chain import verify_store
from shared.eventstore.checkpoint import Anchors, Refused, check_store, read_checkpoint
from shared.signing import Verifier, load_signer, load_verifier
from tampering import OTHER, STORES, SUBJECT, TAMPERINGS, checkpoint, fill_stores


@pytest.fixture
async def conn(database_url):
    await fill_stores(database_url)
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


def lines(directory: Path, service: str) -> list[bytes]:
    return (directory / f"{service}.jsonl").read_bytes().splitlines()


def anchors(directory: Path, verifier: Verifier) -> dict[str, Anchors]:
    found = {}
    for service in STORES:
        found[service] = Anchors(service)
        for line in lines(directory, service):
            found[service].add(read_checkpoint(line, verifier))
    return found


async def test_a_checkpoint_signs_every_streams_head_in_parts_and_an_untouched_store_matches_it(
    conn, database_url, tmp_path
):
    await checkpoint(database_url, tmp_path / "keys", tmp_path, heads_per_part=1)
    verifier = load_verifier(tmp_path / "keys")
    parts = [read_checkpoint(line, verifier) for line in lines(tmp_path, "enrollment")]
    assert [(p.part, p.last_part) for p in parts] == [(1, False), (2, True)]  # two streams, one head a part
    assert len({(p.made_at, p.last_notification_id) for p in parts}) == 1  # one snapshot
    assert {h.stream for p in parts for h in p.heads} == {subject_uuid(SUBJECT), subject_uuid(OTHER)}
    (followup,) = [read_checkpoint(line, verifier) for line in lines(tmp_path, "followup")]
    assert [(h.stream, h.version) for h in followup.heads] == [(subject_uuid(SUBJECT), 2)]
    for service, kept in anchors(tmp_path, verifier).items():
        assert await check_store(conn, kept) == [], service


@pytest.mark.parametrize("tampering", TAMPERINGS)
async def test_each_rewrite_the_chain_alone_misses_is_caught_against_a_checkpoint(
    conn, database_url, tmp_path, tampering
):
    await checkpoint(database_url, tmp_path / "keys", tmp_path)
    tamper, store, subject, words = TAMPERINGS[tampering]
    version = await tamper(conn)

    for service in STORES:  # the chain was kept consistent: it alone sees nothing
        assert (await verify_store(conn, service, service)).findings == []
    kept = anchors(tmp_path, load_verifier(tmp_path / "keys"))
    (finding,) = await check_store(conn, kept[store])
    assert (finding.store, finding.originator_id) == (store, subject_uuid(subject))
    assert finding.version >= version  # the first signed head at or after the change
    assert words in finding.problem and "the checkpoint of" in finding.problem
    others = [s for s in STORES if s != store]
    assert [await check_store(conn, kept[s]) for s in others] == [[] for _ in others]


async def test_a_later_checkpoint_of_the_rewritten_store_does_not_hide_the_rewrite(conn, database_url, tmp_path):
    await checkpoint(database_url, tmp_path / "keys", tmp_path)
    tamper, store, subject, _ = next(iter(TAMPERINGS.values()))
    await tamper(conn)
    await checkpoint(database_url, tmp_path / "keys", tmp_path)  # the service signs what it now finds
    (finding,) = await check_store(conn, anchors(tmp_path, load_verifier(tmp_path / "keys"))[store])
    assert finding.originator_id == subject_uuid(subject) and "rewritten" in finding.problem


async def test_a_checkpoint_not_signed_as_it_reads_is_refused(conn, database_url, tmp_path):
    keys = tmp_path / "keys"
    await checkpoint(database_url, keys, tmp_path)
    verifier = load_verifier(keys)
    (line,) = lines(tmp_path, "followup")
    message = json.loads(line)

    def refused(changed: dict) -> str:
        with pytest.raises(Refused) as caught:
            read_checkpoint(canonical(changed), verifier)
        return str(caught.value)

    hidden = {**message, "heads": [{**message["heads"][0], "version": 1}]}  # a head moved back to hide a tail
    assert "does not match" in refused(hidden)
    assert "not signed" in refused({k: v for k, v in message.items() if k != "signature"})
    assert "unknown key" in refused({**message, "key_id": "followup-000000000000"})
    # Re-signed with another service's key: signed, but not by the followup service.
    other = load_signer(keys, "enrollment")
    forged = {**message, "key_id": other.key_id}
    forged["signature"] = base64.b64encode(other.sign(signed_bytes(forged))).decode()
    assert "not by a key of the followup service" in refused(forged)
    with pytest.raises(Refused, match="not JSON"):
        read_checkpoint(b"{garbled", verifier)
    assert read_checkpoint(line, verifier).service == "followup"  # the line as written still reads
