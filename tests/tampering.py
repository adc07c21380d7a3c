"""Event stores to tamper with, and the tampering of someone with SQL access who knows the chain: an
event edited and its stream's chain recomputed, a stream's last event removed with its chain row, a
whole stream removed. The hash chain alone shows none of them; a checkpoint shows each."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from services.enrollment import domain as enrollment
from services.enrollment.domain import EnrollmentSubject
from services.followup.domain import FollowupSubject
from shared import db
from shared.anchoring import Checkpointer
from shared.contract.envelope import RecordedBy
from shared.contract.events import AEReported, Enrolled
from shared.contract.topics import Source
from shared.eventstore import EventMeta, subject_uuid
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.eventstore.chain import GENESIS, chain_hash
from shared.protocol import load_protocol
from shared.signing import ensure_keys, load_signer

SUBJECT, OTHER = "UCT-07-101", "UCT-07-102"  # both enrolled; SUBJECT has two AEs in follow-up
STORES: tuple[Source, ...] = ("enrollment", "followup")


def _meta(subject: str, days_ago: int) -> EventMeta:
    return EventMeta(
        subject_id=subject,
        occurred_at=datetime.now(UTC) - timedelta(days=days_ago),
        recorded_by=RecordedBy(user_id="u1", role="coordinator"),
        protocol_version="t@1",
    )


def _ae(term: str, grade: int) -> AEReported:
    return AEReported(
        ae_id=uuid.uuid4(),
        term=term,
        category="OTHER",
        grade=grade,
        serious=False,
        seriousness_criteria=(),
        relatedness="possible",
        expected=None,
        aware_at=datetime.now(UTC) - timedelta(days=2),
        crs=None,
        icans=None,
        gvhd=None,
    )


def _record(database_url: str) -> None:
    enrolled = Enrolled(
        site_id="07",
        consent_signed_on=(datetime.now(UTC) - timedelta(days=9)).date(),
        year_of_birth=1970,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    store: SubjectApplication[Any] = SubjectApplication(
        EnrollmentSubject, "enrollment", postgres_env(database_url, "enrollment")
    )
    try:
        for subject in (SUBJECT, OTHER):
            store.record(partial(enrollment.enrol, protocol=load_protocol()), _meta(subject, 8), enrolled)
    finally:
        store.close()
    store = SubjectApplication(FollowupSubject, "followup", postgres_env(database_url, "followup"))
    try:
        stream = None
        for term, grade in (("Fever", 2), ("Nausea", 1)):
            stream = FollowupSubject.record_into(stream, _meta(SUBJECT, 2), _ae(term, grade))
            store.commit(stream)
    finally:
        store.close()


async def fill_stores(database_url: str) -> None:
    """Enrollment: SUBJECT and OTHER enrolled. Follow-up: SUBJECT's AE of grade 2, then one of grade 1."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("".join(db.plumbing_ddl(s) for s in STORES))
    finally:
        await conn.close()
    await asyncio.to_thread(_record, database_url)


async def _nothing(*_: object) -> None:
    return None


async def checkpoint(database_url: str, keys: Path, directory: Path, heads_per_part: int = 2000) -> None:
    """A checkpoint of each store, made and filed as the services do (`<directory>/<service>.jsonl`)."""
    ensure_keys(keys, STORES)
    pool = await db.create_pool(database_url)
    try:
        for service in STORES:
            made = Checkpointer(
                pool,
                service,
                load_signer(keys, service),
                directory / f"{service}.jsonl",
                _nothing,
                every=1,
                prepare=_nothing,
                heads_per_part=heads_per_part,
            )
            assert await made.checkpoint()
    finally:
        await pool.close()


async def rechain(conn: asyncpg.Connection, service: str, stream: uuid.UUID) -> None:
    """Recompute a stream's chain from its rows as they are now, as the application would have."""
    rows = await conn.fetch(
        f"SELECT originator_version, topic, state FROM {service}.{service}_events "
        "WHERE originator_id = $1 ORDER BY originator_version",
        stream,
    )
    previous = GENESIS
    for row in rows:
        previous = chain_hash(previous, stream, row["originator_version"], row["topic"], bytes(row["state"]))
        await conn.execute(
            f"UPDATE {service}.{service}_events_chain SET hash = $3 "
            "WHERE originator_id = $1 AND originator_version = $2",
            stream,
            row["originator_version"],
            previous,
        )


async def downgrade_ae(conn: asyncpg.Connection) -> int:
    """SUBJECT's grade 2 AE made grade 1, the chain recomputed; its version."""
    stream = subject_uuid(SUBJECT)
    row = await conn.fetchrow(
        "SELECT originator_version, state FROM followup.followup_events WHERE originator_id = $1 "
        """AND convert_from(state, 'UTF8') LIKE '%"grade":2%'""",
        stream,
    )
    forged = bytes(row["state"]).replace(b'"grade":2', b'"grade":1')
    await conn.execute(
        "UPDATE followup.followup_events SET state = $3 WHERE originator_id = $1 AND originator_version = $2",
        stream,
        row["originator_version"],
        forged,
    )
    await rechain(conn, "followup", stream)
    return int(row["originator_version"])


async def remove_last_event(conn: asyncpg.Connection) -> int:
    """SUBJECT's last follow-up event removed with its chain row; its version."""
    stream = subject_uuid(SUBJECT)
    version = await conn.fetchval(
        "SELECT max(originator_version) FROM followup.followup_events WHERE originator_id = $1", stream
    )
    for table in ("followup_events", "followup_events_chain"):
        await conn.execute(
            f"DELETE FROM followup.{table} WHERE originator_id = $1 AND originator_version = $2", stream, version
        )
    return int(version)


async def remove_stream(conn: asyncpg.Connection) -> int:
    """OTHER's whole enrollment stream removed, chain and all; the version it had reached."""
    stream = subject_uuid(OTHER)
    version = await conn.fetchval(
        "SELECT max(originator_version) FROM enrollment.enrollment_events WHERE originator_id = $1", stream
    )
    for table in ("enrollment_events", "enrollment_events_chain"):
        await conn.execute(f"DELETE FROM enrollment.{table} WHERE originator_id = $1", stream)
    return int(version)


# What each tampering leaves for a checkpoint to find: the store, the subject, and words of the finding.
TAMPERINGS = {
    "an AE grade changed from 2 to 1, the chain recomputed": (downgrade_ae, "followup", SUBJECT, "was rewritten"),
    "a stream's last event removed with its chain row": (remove_last_event, "followup", SUBJECT, "is gone: removed"),
    "a whole enrollment stream removed": (remove_stream, "enrollment", OTHER, "the stream is gone"),
}
