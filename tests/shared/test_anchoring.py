"""The checkpoint task on a real store and a real broker: a checkpoint only when the store moved, in
the service's file first, then the same lines on its checkpoint topic; a topic that failed is
caught up at the next tick."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from infra.checkpoints import topic_lines
from services.enrollment.domain import EnrollmentSubject
from services.enrollment.main import SPEC
from shared import db
from shared.anchoring import Checkpointer
from shared.config import Settings
from shared.contract.topics import checkpoint_topic
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.eventstore.checkpoint import read_checkpoint
from shared.service import build_app, ensure_topics, wire
from shared.signing import ensure_keys, load_signer, load_verifier
from tampering import checkpoint, fill_stores, remove_stream


async def topic(settings: Settings) -> list[bytes]:
    return [line async for _, line in topic_lines(settings)]


async def test_checkpoints_go_to_the_file_then_the_topic_and_only_when_the_store_moved(
    database_url, bootstrap_servers, topic_prefix, tmp_path
):
    settings = Settings(_env_file=None, kafka_bootstrap_servers=bootstrap_servers, topic_prefix=topic_prefix)
    ensure_keys(tmp_path / "keys", ("enrollment",))
    ready = asyncio.Event()
    wiring = wire(SPEC, settings, ready, load_signer(tmp_path / "keys", "enrollment"))  # as the service wires it
    await wiring.broker.start()
    ready.set()
    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("enrollment"))
    (
        await asyncio.to_thread(
            SubjectApplication, EnrollmentSubject, "enrollment", postgres_env(database_url, "enrollment")
        )
    ).close()
    file = tmp_path / "checkpoints" / "enrollment.jsonl"
    failing = True

    async def publish(line: bytes) -> Any:
        if failing:
            raise ConnectionError("the broker is away")
        return await wiring.publish_checkpoint(line)

    checkpoints = Checkpointer(
        pool,
        "enrollment",
        load_signer(tmp_path / "keys", "enrollment"),
        file,
        publish,
        every=0.1,
        prepare=lambda: ensure_topics(settings, [checkpoint_topic("enrollment", topic_prefix)]),
    )
    try:
        assert not await checkpoints.checkpoint() and not file.exists()  # nothing stored: nothing to sign

        await fill_stores(database_url)
        with pytest.raises(ConnectionError):  # the task logs it and tries again at the next tick
            await checkpoints.checkpoint()
        assert len(file.read_bytes().splitlines()) == 1  # filed before the topic was tried

        failing = False
        assert await checkpoints.checkpoint()  # made again: the topic did not take the first one
        filed = file.read_bytes().splitlines()
        assert len(filed) == 2 and await topic(settings) == filed[1:]
        assert not await checkpoints.checkpoint()  # the store did not move

        conn = await asyncpg.connect(database_url)
        try:
            await remove_stream(conn)  # the last one stored: the store's position goes back
        finally:
            await conn.close()
        assert await checkpoints.checkpoint()  # it moved (back): signed as found, the earlier ones still tell
        filed = file.read_bytes().splitlines()
        assert await topic(settings) == filed[1:]
        verifier = load_verifier(tmp_path / "keys")
        heads = [len(read_checkpoint(line, verifier).heads) for line in filed]
        assert heads == [2, 2, 1]
    finally:
        await pool.close()
        await wiring.broker.stop()


async def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next_checkpoint(database_url, tmp_path):
    await fill_stores(database_url)
    file = tmp_path / "checkpoints" / "followup.jsonl"
    file.parent.mkdir()
    file.write_bytes(b'{"format":1,"heads":[{"hash":"6864')  # the process died while writing a part
    await checkpoint(database_url, tmp_path / "keys", tmp_path / "checkpoints")
    cut, written = file.read_bytes().splitlines()
    assert cut.endswith(b"6864") and read_checkpoint(written, load_verifier(tmp_path / "keys")).service == "followup"


def test_a_service_without_its_signing_key_does_not_start(tmp_path):
    settings = Settings(_env_file=None, database_url="postgresql://nowhere/ucart", keys_dir=tmp_path)
    with pytest.raises(SystemExit, match="cannot sign its events"):
        build_app(SPEC, settings)
