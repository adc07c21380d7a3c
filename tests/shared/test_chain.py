"""Tamper evidence on a real event store: rows changed, removed or slipped in behind the application."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from functools import partial

import asyncpg
import pytest

from services.enrollment import domain
from services.enrollment.domain import EnrollmentSubject
from shared import db
from shared.contract.envelope import RecordedBy
from shared.contract.events import ConsentWithdrawn, Enrolled
from shared.eventstore import EventMeta, subject_uuid
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.eventstore.chain import verify_store
from shared.protocol import load_protocol

SUBJECTS = ["UCT-07-001", "UCT-07-002", "UCT-07-003"]

PROTOCOL = load_protocol()


def meta(subject: str, days_ago: int) -> EventMeta:
    return EventMeta(
        subject_id=subject,
        occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
        recorded_by=RecordedBy(user_id="u1", role="coordinator"),
        protocol_version="t@1",
    )


@pytest.fixture
async def conn(database_url):
    pool = await db.create_pool(database_url)
    await pool.execute(db.plumbing_ddl("enrollment"))
    await pool.close()
    app = await asyncio.to_thread(
        SubjectApplication, EnrollmentSubject, "enrollment", postgres_env(database_url, "enrollment")
    )
    enrolled = Enrolled(
        site_id="07",
        consent_signed_on=(datetime.now(UTC) - timedelta(days=9)).date(),
        year_of_birth=1970,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    for subject in SUBJECTS:
        await asyncio.to_thread(app.record, partial(domain.enrol, protocol=PROTOCOL), meta(subject, 8), enrolled)
        await asyncio.to_thread(
            app.record,
            partial(domain.withdraw, facts=None),
            meta(subject, 2),
            ConsentWithdrawn(withdrawal_reason="moved"),
        )
    app.close()
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def verify(conn):
    return await verify_store(conn, "enrollment", "enrollment")


async def test_an_untouched_store_verifies(conn):
    result = await verify(conn)
    assert (result.events, result.streams, result.unchained_streams, result.findings) == (6, 3, 0, [])


async def test_a_row_changed_in_sql_is_named(conn):
    target = subject_uuid(SUBJECTS[1])
    changed = await conn.execute(
        """UPDATE enrollment.enrollment_events
           SET state = convert_to(replace(convert_from(state, 'UTF8'), 'moved', 'stayed'), 'UTF8')
           WHERE originator_id = $1 AND originator_version = 2""",
        target,
    )
    assert changed == "UPDATE 1"
    (finding,) = (await verify(conn)).findings
    assert (finding.originator_id, finding.version) == (target, 2)
    assert "changed" in finding.problem


async def test_a_row_removed_in_sql_is_named(conn):
    target = subject_uuid(SUBJECTS[0])
    await conn.execute(
        "DELETE FROM enrollment.enrollment_events WHERE originator_id = $1 AND originator_version = 1", target
    )
    (finding,) = (await verify(conn)).findings
    assert (finding.originator_id, finding.version, finding.problem) == (target, 1, "the event row was removed")


async def test_a_row_slipped_in_behind_the_application_is_named(conn):
    target = subject_uuid(SUBJECTS[2])
    await conn.execute(
        """INSERT INTO enrollment.enrollment_events (originator_id, originator_version, topic, state)
                          SELECT originator_id, 3, topic, state FROM enrollment.enrollment_events
                          WHERE originator_id = $1 AND originator_version = 2""",
        target,
    )
    (finding,) = (await verify(conn)).findings
    assert (finding.version, "not in the chain" in finding.problem) == (3, True)
