"""Helpers for the fault-injection tests (tests/faults/): a stack of its own, a broker or PostgreSQL of
its own, commands sent the way a careful client sends them, and the one check every fault test ends
with: every event stored is in every projection exactly once, and projections rebuilt from the event
stores equal the live ones.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from conftest import drop_database, new_database
from prometheus_client.parser import text_string_to_metric_families

from infra import replay
from infra.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from infra.kafka import EmbeddedApacheKafka, embedded_broker
from services.registry import READ_MODELS
from shared import db
from shared.config import Settings
from shared.consumer import IdempotentConsumer
from shared.contract.envelope import Envelope
from shared.contract.topics import SOURCES, topic_for
from shared.eventstore.aggregate import subject_uuid
from shared.eventstore.reader import read_events
from shared.readmodel import ReadModel
from shared.signing import Verifier
from support import (
    FLU_CY,
    HEADERS,
    INFUSION,
    RunningStack,
    at,
    enrolment,
    eventually,
    journey_caught_up,
)

RECONCILE_SECONDS = 2.0  # short, so that the safety net under Kafka acts within a test

# ---------------------------------------------------------------------------------------------------
# Infrastructure of a test's own


@contextmanager
def own_broker(tmp_path: Path, port: int | None = None) -> Iterator[EmbeddedApacheKafka | EmbeddedKafka]:
    """A broker of the session's kind only this test uses (so stopping it harms no other test); an
    Apache Kafka keeps its log in a directory of its own across stop() and start()."""
    name = f"broker-{uuid.uuid4().hex[:6]}"
    broker = embedded_broker(port or free_port(), tmp_path / f"{name}.log", tmp_path / name)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@contextmanager
def own_postgres(tmp_path: Path) -> Iterator[tuple[EmbeddedPostgres, str]]:
    """A PostgreSQL server only this test uses, and the URL of a database on it."""
    server = EmbeddedPostgres(tmp_path / "pgdata")
    try:
        url = asyncio.run(db.ensure_database(server.start(), "ucart"))
        yield server, url
    finally:
        server.stop()


@contextmanager
def fault_stack(
    servers: tuple[str, str],
    tmp_path: Path,
    *,
    database_url: str | None = None,
    bootstrap: str | None = None,
    reconcile_seconds: float = RECONCILE_SECONDS,
    **settings: object,
) -> Iterator[RunningStack]:
    """The three services as processes, on a fresh database of the session's PostgreSQL (or on
    `database_url`) and the session's broker (or `bootstrap`), with a topic prefix and signing keys
    (`tmp_path/keys`) of their own (`settings`: any other Settings for them)."""
    with ExitStack() as cleanup:
        if database_url is None:
            database_url = new_database(servers[0])
            cleanup.callback(drop_database, servers[0], database_url)
        stack = RunningStack(
            database_url,
            bootstrap or servers[1],
            f"f{uuid.uuid4().hex[:8]}.",
            tmp_path / "logs",
            keys_dir=tmp_path / "keys",
            reconcile_seconds=reconcile_seconds,
            **settings,
        )
        cleanup.enter_context(stack)
        cleanup.callback(stop_all, stack)  # before the stack's own (sequential) stop, which then has nothing to do
        yield stack


def stop_all(stack: RunningStack, timeout: float = 3.0) -> None:
    """SIGTERM all three at once; SIGKILL what is still running after `timeout` (a service stopped
    while its consumers are still joining their groups waits for the join: not what is tested here)."""
    run_in_threads(*(partial(process.stop, timeout) for process in stack.group.services.values()), workers=3)


def restart(stack: RunningStack, service: str) -> None:
    process = stack.group[service]
    process.start()
    process.wait_healthy()


# ---------------------------------------------------------------------------------------------------
# Commands, and what became of them


@dataclass
class Sent:
    """One command and its outcome. status None: the connection broke after the request was sent,
    so the client cannot know whether it was stored (it may have been, at most once)."""

    service: str
    subject_id: str
    event_type: str
    key: str  # what tells this command's event from the subject's others (date, ae_id, visit code)
    status: int | None
    body: dict | None = None
    attempted_at: float = 0.0  # time.monotonic() when the last attempt began
    answered_at: float = 0.0

    @property
    def event_ids(self) -> list[str]:
        return [e["event_id"] for e in (self.body or {}).get("events", [])] if self.status == 201 else []


def event_key(envelope: Envelope) -> str:
    payload = envelope.payload
    if "ae_id" in payload:
        return str(payload["ae_id"])
    if "visit_code" in payload:
        return payload["visit_code"]
    return envelope.occurred_at.date().isoformat()


@dataclass
class Ledger:
    """Every command the test sent (from any thread) and its outcome."""

    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    unreachable: int = 0  # connections refused (the service was down), each followed by a resend

    def add(self, sent: Sent) -> Sent:
        with self.lock:
            self.sent.append(sent)
        return sent

    def count(self, status: int | None, service: str | None = None) -> int:
        with self.lock:
            return sum(s.status == status and (service is None or s.service == service) for s in self.sent)

    def assert_stored_exactly(self, database_url: str, *, allowed: tuple[int | None, ...] = (201, 409, None)) -> None:
        """Nothing lost, nothing doubled, on the write side: every 201 has its events stored, once;
        a command whose answer was lost is stored at most once; a refused command stored nothing;
        and nothing is stored that no command asked for."""
        stored = asyncio.run(stored_events(database_url))
        unexpected = [s for s in self.sent if s.status not in allowed]
        assert not unexpected, f"unexpected answers: {[(s.event_type, s.status, s.body) for s in unexpected]}"
        ids = Counter(str(e.event_id) for e in stored)
        assert all(n == 1 for n in ids.values())
        answered = [i for s in self.sent for i in s.event_ids]
        assert len(answered) == len(set(answered))
        lost = [i for i in answered if i not in ids]
        assert not lost, f"{len(lost)} event(s) answered 201 but not stored: {lost}"
        by_key = Counter((e.source, e.subject_id, e.event_type, event_key(e)) for e in stored)
        answers: dict[tuple, list[int | None]] = {}
        for s in self.sent:
            answers.setdefault((s.service, s.subject_id, s.event_type, s.key), []).append(s.status)
        for key in by_key.keys() | answers.keys():
            n, outcomes = by_key.get(key, 0), answers.get(key, [])
            assert outcomes, f"stored, but no command asked for it: {key}"
            assert outcomes.count(201) <= n <= outcomes.count(201) + outcomes.count(None), (
                f"{key}: stored {n} time(s), answers {outcomes}"
            )


class Client:
    """Sends commands the way a careful client does: resend what surely never arrived (connection
    refused) or was refused as retryable (a dependency down, a fact not yet learned), but not a
    request whose answer was lost (that is recorded as unknown: status None)."""

    def __init__(self, stack: RunningStack, ledger: Ledger, *, retry_for: float = 60.0):
        self.stack, self.ledger, self.retry_for = stack, ledger, retry_for
        # No keep-alive: a connection kept to a process that was then killed is not a lost answer.
        self.http = httpx.Client(timeout=30, limits=httpx.Limits(max_keepalive_connections=0))

    def close(self) -> None:
        self.http.close()

    def send(
        self,
        service: str,
        subject: str,
        path: str,
        event_type: str,
        occurred_at: str,
        payload: dict,
        *,
        key: str | None = None,
        retry: bool = True,
    ) -> Sent:
        url = self.stack.url(service, f"/subjects/{subject}/{path}")
        body = {"occurred_at": occurred_at, "payload": payload}
        sent = Sent(service, subject, event_type, key or occurred_at[:10], None)
        deadline = time.monotonic() + self.retry_for
        while True:
            sent.attempted_at, sent.status, sent.body = time.monotonic(), None, None
            try:
                response = self.http.post(url, json=body, headers=HEADERS)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                with self.ledger.lock:
                    self.ledger.unreachable += 1
                if not retry or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
                continue
            except httpx.TransportError:
                return self.ledger.add(sent)  # sent, but the answer was lost
            sent.status, sent.body, sent.answered_at = response.status_code, response.json(), time.monotonic()
            if response.status_code != 201:
                assert response.headers["content-type"] == "application/problem+json", response.text
            if retry and sent.body.get("retryable") and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            return self.ledger.add(sent)

    # The steps of a subject's journey, each one command.
    def enrol(self, subject: str, days_ago: int = 12) -> Sent:
        return self.send("enrollment", subject, "enrolment", "Enrolled", at(days_ago), enrolment(days_ago))

    def lymphodepletion(self, subject: str, days_ago: int) -> Sent:
        return self.send("treatment", subject, "lymphodepletion-days", "LymphodepletionGiven", at(days_ago), FLU_CY)

    def infuse(self, subject: str, days_ago: int = 3) -> Sent:
        return self.send("treatment", subject, "infusion", "UCARTInfused", at(days_ago), INFUSION)

    def adverse_event(self, subject: str, days_ago: int = 2, grade: int = 1) -> Sent:
        ae_id = str(uuid.uuid4())
        payload = {
            "ae_id": ae_id,
            "term": "Fever",
            "category": "OTHER",
            "grade": grade,
            "serious": False,
            "relatedness": "possible",
            "aware_at": at(days_ago, hour=12),
        }
        return self.send("followup", subject, "adverse-events", "AEReported", at(days_ago), payload, key=ae_id)

    def visit(self, subject: str, code: str = "D1", days_ago: int = 2) -> Sent:
        return self.send("followup", subject, "visits", "VisitCompleted", at(days_ago), {"visit_code": code}, key=code)

    def journey(
        self, subject: str, *, enrol: bool = True, ld_days: int = 3, aes: int = 1, visits: tuple[str, ...] = ("D1",)
    ) -> None:
        """Enrolment 12 days ago, lymphodepletion (8, 7, 6... days ago), infusion 3 days ago, then AEs
        and visits. A step whose answer was lost is not repeated; the journey goes on."""
        if enrol:
            self.enrol(subject)
        for day in range(8, 8 - ld_days, -1):
            self.lymphodepletion(subject, day)
        self.infuse(subject)
        for n in range(max(aes, len(visits))):
            if n < aes:
                self.adverse_event(subject)
            if n < len(visits):
                self.visit(subject, visits[n])


# ---------------------------------------------------------------------------------------------------
# Reading what is stored


async def stored_events(database_url: str) -> list[Envelope]:
    conn = await asyncpg.connect(database_url)
    try:
        return [e for source in SOURCES async for e in read_events(conn, source)]
    finally:
        await conn.close()


def event_counts(database_url: str) -> dict[str, int]:
    events = asyncio.run(stored_events(database_url))
    return {source: sum(e.source == source for e in events) for source in SOURCES}


async def partitions_of(bootstrap: str, topics: Sequence[str]) -> list[TopicPartition]:
    """The partitions of those topics that exist on the broker at `bootstrap`."""
    return await replay.partitions_of(Settings(_env_file=None, kafka_bootstrap_servers=bootstrap), topics)


async def read_records(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[ConsumerRecord]:
    """A topic's messages from the earliest offset (all partitions), until `expected` or the timeout.
    No consumer group: nothing to join, and nothing committed."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await reader.start()
    found: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while not (partitions := await partitions_of(bootstrap, [topic])) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if not partitions:
            return found
        reader.assign(partitions)
        await reader.seek_to_beginning()
        while len(found) < expected and time.monotonic() < deadline:
            for records in (await reader.getmany(timeout_ms=200)).values():
                found += records
    finally:
        await reader.stop()
    return found


def headers(record: ConsumerRecord) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def produce(bootstrap: str, messages: list[tuple[str, bytes, bytes, Sequence[tuple[str, bytes]]]]) -> None:
    """Send (topic, key, value, headers) messages as they are (signature headers included), in this
    order, each acknowledged before the next."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for topic, key, value, headers in messages:
            await producer.send_and_wait(topic, value, key=key, headers=list(headers))
    finally:
        await producer.stop()


def metrics(stack: RunningStack, service: str) -> dict[tuple[str, tuple], float]:
    text = stack.get(service, "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def consumer_count(stack: RunningStack, service: str, consumer: str, outcome: str) -> float:
    key = ("ucart_consumer_messages_total", (("consumer", consumer), ("outcome", outcome)))
    return metrics(stack, service).get(key, 0)


def kafka_drained(stack: RunningStack) -> bool:
    """Every consumer group has committed, on every partition it reads, the topic's end offset:
    every message on the topics has been handled (offsets are committed after the effects)."""
    problems = asyncio.run(_undrained(stack.bootstrap, stack.prefix))
    assert not problems, problems[:5]
    return True


async def _undrained(bootstrap: str, prefix: str) -> list[str]:
    problems = []
    for watched in CONSUMERS:
        # The group's committed offsets, read without joining it (manual assignment: no rebalance).
        reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=f"{prefix}ucart-{watched.consumer}", enable_auto_commit=False
        )
        await reader.start()
        try:
            partitions = await partitions_of(bootstrap, [topic_for(s, prefix) for s in watched.sources])
            reader.assign(partitions)
            for tp, end in (await reader.end_offsets(partitions)).items():
                done = await reader.committed(tp) or 0
                if done < end:
                    problems.append(f"{watched.consumer} {tp.topic}[{tp.partition}]: committed {done} of {end}")
        finally:
            await reader.stop()
    return problems


# ---------------------------------------------------------------------------------------------------
# The check: nothing lost, nothing doubled, rebuilt equals live


CONSUMERS = READ_MODELS  # every read model, each kept by one consumer of one service


async def _stream_versions(conn: asyncpg.Connection) -> dict[tuple[str, str], int]:
    """(source, subject uuid) -> the last stream version stored; versions must run 1..n."""
    versions = {}
    for source in SOURCES:
        rows = await conn.fetch(f"""SELECT originator_id, max(originator_version) AS last, count(*) AS n
                                    FROM {source}.{source}_events GROUP BY originator_id""")
        for row in rows:
            assert row["last"] == row["n"], f"{source} stream {row['originator_id']} has holes"
            versions[(source, str(row["originator_id"]))] = row["last"]
    return versions


async def lagging(database_url: str) -> list[str]:
    """What each consumer has not applied exactly (empty when every stored event was applied once,
    and nothing beyond what is stored)."""
    conn = await asyncpg.connect(database_url)
    try:
        stored = await _stream_versions(conn)
        problems = []
        for watched in CONSUMERS:
            rows = await conn.fetch(
                f"SELECT subject_id, source, last_version FROM {watched.service}.consumer_applied WHERE consumer = $1",
                watched.consumer,
            )
            applied = {(r["source"], str(subject_uuid(r["subject_id"]))): r["last_version"] for r in rows}
            expected = {k: v for k, v in stored.items() if k[0] in watched.sources}
            for key in expected.keys() | applied.keys():
                if applied.get(key, 0) != expected.get(key, 0):
                    problems.append(
                        f"{watched.consumer} {key}: applied {applied.get(key, 0)}, stored {expected.get(key, 0)}"
                    )
        return problems
    finally:
        await conn.close()


def _row(watched: ReadModel, record: asyncpg.Record) -> object:
    if watched.kind == "journey":
        return json.loads(record["journey"])
    return {k: v for k, v in record.items()}


async def _read_model(conn: asyncpg.Connection, watched: ReadModel, schema: str) -> dict[str, object]:
    rows = await conn.fetch(f"SELECT * FROM {schema}.{watched.table} ORDER BY subject_id")
    return {r["subject_id"]: _row(watched, r) for r in rows}


async def rebuilt(database_url: str, watched: ReadModel) -> tuple[dict[str, object], int]:
    """The consumer's read model built afresh from the event stores, in a schema of its own, and how
    many stored events it parked doing so."""
    replica = f"replica_{watched.service}"
    pool = await db.create_pool(database_url)
    try:
        await pool.execute(f"DROP SCHEMA IF EXISTS {replica} CASCADE")
        await pool.execute(db.plumbing_ddl(replica) + watched.ddl(replica))
        # From the event stores only: no message to verify.
        consumer = IdempotentConsumer(watched.projection(replica), pool, schema=replica, verifier=Verifier({}))
        await consumer.reconcile(watched.sources)
        parked = await pool.fetchval(f"SELECT count(*) FROM {replica}.parked_events")
        async with pool.acquire() as conn:
            return await _read_model(conn, watched, replica), parked
    finally:
        await pool.close()


async def live(database_url: str, watched: ReadModel) -> dict[str, object]:
    conn = await asyncpg.connect(database_url)
    try:
        return await _read_model(conn, watched, watched.service)
    finally:
        await conn.close()


async def _count(database_url: str, sql: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def snapshot(database_url: str) -> dict[str, dict[str, object]]:
    """Every live read model, by consumer."""
    return {w.consumer: asyncio.run(live(database_url, w)) for w in CONSUMERS}


def wait_caught_up(database_url: str, timeout: float = 60.0) -> None:
    """Until every consumer has applied every stored event exactly once."""

    def caught_up() -> bool:
        problems = asyncio.run(lagging(database_url))
        assert not problems, problems[:5]
        return True

    eventually(caught_up, timeout=timeout)


def assert_converged(
    database_url: str, *, parked: dict[str, int] | None = None, timeout: float = 60.0
) -> dict[str, dict[str, object]]:
    """Wait until every consumer has applied every stored event exactly once (per stream, the last
    version applied is the last version stored: nothing missing, nothing beyond; parked events are
    stepped over); then check that each read model rebuilt from the event stores equals the live one
    and parked the same stored events, that nothing else was parked (`parked`: the expected count
    per consumer) and that every gap was filled. Returns the live read models."""
    wait_caught_up(database_url, timeout)
    assert journey_caught_up(database_url)  # the suite's shared check agrees
    models = snapshot(database_url)
    for watched in CONSUMERS:
        replica, replica_parked = asyncio.run(rebuilt(database_url, watched))
        live_parked = asyncio.run(
            _count(
                database_url,
                f"""SELECT count(*) FROM {watched.service}.parked_events
            WHERE consumer = '{watched.consumer}' AND in_store AND resolved_at IS NULL""",
            )
        )
        assert replica_parked == live_parked, (
            f"{watched.consumer}: the rebuild parked {replica_parked} stored event(s), the live consumer {live_parked}"
        )
        current = models[watched.consumer]
        assert current.keys() == replica.keys(), f"{watched.consumer}: subjects differ"
        different = [s for s in current if current[s] != replica[s]]
        assert not different, (
            f"{watched.consumer}: live != rebuilt for {different[:3]}: "
            f"{current[different[0]]} != {replica[different[0]]}"
        )
    expected_parked = parked or {}
    for watched in CONSUMERS:
        count = asyncio.run(
            _count(
                database_url,
                f"""SELECT count(*) FROM {watched.service}.parked_events
            WHERE consumer = '{watched.consumer}' AND resolved_at IS NULL""",
            )
        )
        assert count == expected_parked.get(watched.consumer, 0), f"{watched.consumer}: {count} parked event(s)"
    for service in SOURCES:
        unrepaired = asyncio.run(
            _count(database_url, f"SELECT count(*) FROM {service}.consumer_gaps WHERE NOT repaired")
        )
        assert unrepaired == 0, f"{service}: {unrepaired} gap(s) could not be filled"
    return models


def journeys(stack: RunningStack, ledger: Ledger, subjects: list[str], **steps) -> None:
    """Each subject's journey (`Client.journey`) in a thread of its own, all at once."""

    def one(subject: str) -> None:
        client = Client(stack, ledger)
        try:
            client.journey(subject, **steps)
        finally:
            client.close()

    run_in_threads(*(partial(one, s) for s in subjects), workers=len(subjects))


def concurrently(
    stack: RunningStack, ledger: Ledger, *commands: Callable[[Client], Sent], retry_for: float = 60.0
) -> list[Sent]:
    """Send the commands all at once, each from its own client (`lambda c: c.enrol(...)`)."""

    def one(command: Callable[[Client], Sent]) -> Sent:
        client = Client(stack, ledger, retry_for=retry_for)
        try:
            return command(client)
        finally:
            client.close()

    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(one, commands))


def run_in_threads(*jobs, workers: int = 8) -> None:
    """Run callables concurrently; re-raise the first failure."""
    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(job) for job in jobs]:
            future.result()
