"""Idempotency keys on real PostgreSQL: one claim wins a race, and the answer is stored in the same
transaction as the command's events (both or neither)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest

from services.enrollment import domain
from services.enrollment.domain import EnrollmentSubject
from shared import db
from shared.contract.envelope import RecordedBy
from shared.contract.events import Enrolled
from shared.errors import ConcurrentChange
from shared.eventstore import EventMeta
from shared.eventstore.application import (
    WITH_THE_EVENTS,
    SubjectApplication,
    postgres_env,
)
from shared.http.idempotency import IdempotencyStore
from shared.protocol import load_protocol


@pytest.fixture
async def keys_and_store(database_url):
    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("enrollment"))
    app = await asyncio.to_thread(
        SubjectApplication, EnrollmentSubject, "enrollment", postgres_env(database_url, "enrollment")
    )
    yield IdempotencyStore(pool, "enrollment"), app, pool
    app.close()
    await pool.close()


def enrol(app: SubjectApplication[EnrollmentSubject], subject: str):
    now = datetime.now(UTC)
    meta = EventMeta(
        subject_id=subject,
        occurred_at=now - timedelta(days=1),
        protocol_version="t@1",
        recorded_by=RecordedBy(user_id="u1", role="coordinator"),
    )
    payload = Enrolled(
        site_id="01",
        consent_signed_on=(now - timedelta(days=2)).date(),
        year_of_birth=1970,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    return app.record(partial(domain.enrol, protocol=load_protocol()), meta, payload)


async def events(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM enrollment.enrollment_events")


async def test_one_of_racing_claims_wins_and_the_others_hear_in_progress(keys_and_store):
    keys, _, _ = keys_and_store
    outcomes = await asyncio.gather(*(keys.claim("race-key-1", "fp") for _ in range(8)), return_exceptions=True)
    assert outcomes.count(None) == 1
    assert all(isinstance(o, ConcurrentChange) and o.retryable for o in outcomes if o is not None)


async def test_the_answer_is_committed_with_the_events(keys_and_store):
    keys, app, _pool = keys_and_store
    assert await keys.claim("enrol-key-1", "fp") is None
    token = WITH_THE_EVENTS.set(keys.answer_with_the_events("enrol-key-1", lambda es: {"events": len(es)}))
    try:
        stored = await asyncio.to_thread(enrol, app, "UCT-42-001")
    finally:
        WITH_THE_EVENTS.reset(token)
    assert len(stored) == 1
    assert await keys.claim("enrol-key-1", "fp") == (201, {"events": 1})  # a retry replays it


async def test_when_the_answer_cannot_be_stored_neither_are_the_events(keys_and_store):
    _keys, app, pool = keys_and_store
    before = await events(pool)
    token = WITH_THE_EVENTS.set(lambda envelopes: [("SELECT 1 / 0", ())])
    try:
        with pytest.raises(Exception, match="division by zero"):
            await asyncio.to_thread(enrol, app, "UCT-42-002")
    finally:
        WITH_THE_EVENTS.reset(token)
    assert await events(pool) == before
    assert await asyncio.to_thread(app.find, "UCT-42-002") is None
