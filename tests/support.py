"""Shared by tests: polling, Kafka reads and signed writes, event-store counts, a running service stack."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from infra.embedded import free_port
from infra.identities import Person, ensure_access_tables, grant_all
from infra.issuer import Issuer
from infra.processes import ServiceGroup
from shared.access.policy import ALL_SITES
from shared.config import Settings
from shared.consumer import KafkaOrigin
from shared.contract.envelope import Envelope
from shared.contract.topics import SOURCES
from shared.signing import ensure_keys, load_signer

T = TypeVar("T")

# One issuer for the whole test session (its key in a temporary directory), and the people the
# stacks grant roles to. TEST_USER enters data at every site and closes queries; HEADERS carry its token.
ISSUER = Issuer(Path(tempfile.mkdtemp(prefix="ucart-test-issuer-")), "https://issuer.test.invalid", "ucart")
atexit.register(shutil.rmtree, ISSUER.directory, True)
TEST_USER, TEST_ADMIN = "test-user", "test-admin"
PEOPLE = [
    Person(TEST_USER, "investigator", (ALL_SITES,), "enters data everywhere"),
    Person(TEST_USER, "data_manager", (ALL_SITES,), "closes queries"),
    Person("auditor-1", "auditor", (ALL_SITES,), "auditor"),
    Person("coordinator-01", "coordinator", ("01",), "coordinator, site 01"),
    Person("coordinator-02", "coordinator", ("02",), "coordinator, site 02"),
    Person("sponsor-1", "sponsor", (ALL_SITES,), "sponsor"),
    # The fuzzer may call every route: data entry, query closing and granting.
    Person("fuzzer", "investigator", (ALL_SITES,), "fuzzing"),
    Person("fuzzer", "data_manager", (ALL_SITES,), "fuzzing"),
    Person("fuzzer", "study_admin", (ALL_SITES,), "fuzzing"),
]


def bearer(user_id: str, **claims: object) -> dict[str, str]:
    """The Authorization header of `user_id`, from the test issuer."""
    return {"Authorization": f"Bearer {ISSUER.token(user_id, **claims)}"}


HEADERS = bearer(TEST_USER)


def eventually(check: Callable[[], T], timeout: float = 45.0, interval: float = 0.3) -> T:
    """Return check()'s first truthy result; fail with the last error or value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"not true after {timeout}s; last: {last!r}")


def at(days_ago: float, hour: int = 9) -> str:
    """An ISO timestamp `days_ago` days before now (UTC), at a fixed hour."""
    moment = (datetime.now(UTC) - timedelta(days=days_ago)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return min(moment, datetime.now(UTC) - timedelta(minutes=1)).isoformat()


def count_events(database_url: str, service: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(f"SELECT count(*) FROM {service}.{service}_events")
        finally:
            await conn.close()

    return asyncio.run(count())


async def read_topic(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[Envelope]:
    """Read a topic from the earliest offset until `expected` messages (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    found: list[Envelope] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                found.extend(Envelope.model_validate_json(r.value) for r in records)
    finally:
        await consumer.stop()
    return found


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.1)


async def read_dead_letters(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, dict]]:
    from aiokafka import AIOKafkaConsumer

    reader = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"dlq-{uuid.uuid4().hex}", auto_offset_reset="earliest"
    )
    await reader.start()
    found = []
    try:
        async with asyncio.timeout(30):
            while len(found) < expected:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    found += [(r.value, {k: v.decode() for k, v in r.headers}) for r in records]
    finally:
        await reader.stop()
    return found


def signature_headers(keys_dir: Path, source: str, value: bytes) -> list[tuple[str, bytes]]:
    """The signature headers `source`'s relay sends with `value`, made with the test keys."""
    return [(name, text.encode()) for name, text in load_signer(keys_dir, source).headers(value).items()]


def source_of(topic: str) -> str:
    """The service whose topic it is (`<prefix>ucart.<source>.events`)."""
    return topic.split(".")[-2]


async def produce_signed(bootstrap: str, keys_dir: Path, messages: Iterable[tuple[str, bytes | None, bytes]]) -> None:
    """Send (topic, key, value) messages, in this order, each acknowledged before the next, and each
    signed with the key of its topic's service, as that service's relay signs."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    try:
        for topic, key, value in messages:
            headers = signature_headers(keys_dir, source_of(topic), value)
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def signed_origin(keys_dir: Path, source: str, offset: int, body: bytes, key: bytes | None = None) -> KafkaOrigin:
    """A message as a consumer receives it from `source`'s topic, signed with the test keys."""
    (_, key_id), (_, signature) = signature_headers(keys_dir, source, body)
    return KafkaOrigin(f"ucart.{source}.events", 0, offset, body, key, key_id.decode(), signature.decode())


def ucart(*args: str, database_url: str, **env: str) -> subprocess.CompletedProcess:
    """The operator command line (`python -m infra ...`), as a person runs it."""
    environment = {**os.environ, "DATABASE_URL": database_url, "COLUMNS": "200", **env}
    return subprocess.run(
        [sys.executable, "-m", "infra", *args], env=environment, capture_output=True, text=True, timeout=120
    )


class RunningStack:
    """The three services as real processes, on free ports, against the test servers, with their
    signing keys in `keys_dir` (made if missing)."""

    def __init__(
        self, database_url: str, bootstrap: str, prefix: str, log_dir: Path, *, keys_dir: Path, **settings: object
    ):
        """`settings`: any other Settings for the services (e.g. reconcile_seconds)."""
        self.database_url, self.bootstrap, self.prefix = database_url, bootstrap, prefix
        self.settings = Settings(
            _env_file=None,
            host="127.0.0.1",
            keys_dir=keys_dir,
            topic_prefix=prefix,
            relay_poll_seconds=0.5,
            enrollment_port=free_port(),
            treatment_port=free_port(),
            followup_port=free_port(),
            database_url=database_url,
            kafka_bootstrap_servers=bootstrap,
            # The services' keys and checkpoint files in the test's own directory, not the repository's;
            # the test issuer unless the test brings its own.
            **{  # type: ignore[arg-type]  # checked by Settings itself
                "data_dir": log_dir / "data",
                "study_admins": (TEST_ADMIN,),
                "oidc_issuer": ISSUER.url,
                "oidc_jwks": str(ISSUER.directory / "jwks.json"),
                **settings,
            },
        )
        ensure_keys(self.settings.signing_keys_dir, SOURCES)
        self.group = ServiceGroup(self.settings, database_url, bootstrap, log_dir)
        self.client = httpx.Client(timeout=30)

    def url(self, service: str, path: str) -> str:
        return f"{self.settings.url(service)}{path}"

    def post(self, service: str, path: str, body: dict, headers: dict | None = None) -> httpx.Response:
        return self.client.post(self.url(service, path), json=body, headers={**HEADERS, **(headers or {})})

    def command(self, service: str, path: str, occurred_at: str, payload: dict, **headers: str) -> httpx.Response:
        return self.post(service, path, {"occurred_at": occurred_at, "payload": payload}, headers)

    def get(self, service: str, path: str, headers: dict | None = None, **params) -> httpx.Response:
        return self.client.get(self.url(service, path), params=params, headers={**HEADERS, **(headers or {})})

    def command_when_known(self, service: str, path: str, occurred_at: str, payload: dict) -> httpx.Response:
        """Post, retrying while the service has not yet learned (from Kafka) what it needs."""

        def attempt():
            response = self.command(service, path, occurred_at, payload)
            return response if not response.json().get("retryable") else None

        return eventually(attempt)

    @property
    def keys_dir(self) -> Path:
        return self.settings.signing_keys_dir

    def __enter__(self) -> RunningStack:
        ensure_keys(self.keys_dir, SOURCES)
        asyncio.run(ensure_access_tables(self.database_url))
        grant_all(self.database_url, PEOPLE, "test set-up")
        self.group.start()
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        self.group.stop()


ENROLLED = {
    "site_id": "01",
    "consent_signed_on": None,
    "year_of_birth": 1980,
    "sex": "F",
    "disease_status": "relapsed",
    "cd19_positive": True,
}
FLU_CY = {
    "agents": [
        {"agent": "fludarabine", "dose": 30, "unit": "mg/m2"},
        {"agent": "cyclophosphamide", "dose": 500, "unit": "mg/m2"},
    ]
}
INFUSION = {"dose_cells_per_kg": 1e7, "dose_level": 1, "product_lot": "LOT-1", "donor_id": "D-1"}


def enrolment(days_ago: float) -> dict:
    consent = (datetime.now(UTC) - timedelta(days=days_ago + 2)).date().isoformat()
    return {**ENROLLED, "consent_signed_on": consent}


def treat(stack: RunningStack, subject: str, infusion_days_ago: int, ld_days: int = 3, site: str = "01") -> None:
    """Enrol (at `site`), lymphodepletion for `ld_days` days, infusion 3 days after the last one."""
    enrolled = {**enrolment(infusion_days_ago + 10), "site_id": site}
    response = stack.command("enrollment", f"/subjects/{subject}/enrolment", at(infusion_days_ago + 10), enrolled)
    assert response.status_code == 201, response.text
    for i in range(ld_days):
        day = infusion_days_ago + 2 + ld_days - i
        response = stack.command_when_known("treatment", f"/subjects/{subject}/lymphodepletion-days", at(day), FLU_CY)
        assert response.status_code == 201, response.text
    response = stack.command("treatment", f"/subjects/{subject}/infusion", at(infusion_days_ago), INFUSION)
    assert response.status_code == 201, response.text


def journey_caught_up(database_url: str) -> bool:
    """True once the journey projection has applied every event stored by the three services
    (stream versions are contiguous, so the sum of the last versions applied is the event count)."""

    async def check() -> bool:
        conn = await asyncpg.connect(database_url)
        try:
            stored = 0
            for service in SOURCES:
                stored += await conn.fetchval(f"SELECT count(*) FROM {service}.{service}_events")
            applied = await conn.fetchval(
                "SELECT coalesce(sum(last_version), 0) FROM followup.consumer_applied"
                " WHERE consumer = 'followup-journey'"
            )
            return applied == stored
        finally:
            await conn.close()

    return asyncio.run(check())


POISONED, OTHER = "UCT-31-001", "UCT-31-002"


def poisoned_followup_store(database_url: str) -> dict[str, list[Envelope]]:
    """Fill a real follow-up event store: POISONED has an AE whose term holds a NUL (PostgreSQL's jsonb
    refuses it, so the journey can never apply it), then a clean one; OTHER has one clean AE."""
    from services.followup.domain import FollowupSubject
    from services.followup.projections import store
    from shared import db
    from shared.contract.envelope import RecordedBy
    from shared.contract.events import AEReported
    from shared.eventstore import EventMeta
    from shared.eventstore.application import SubjectApplication, postgres_env

    async def tables() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(db.plumbing_ddl("followup") + store.ddl("followup"))
        finally:
            await conn.close()

    asyncio.run(tables())
    now = datetime.now(UTC)
    app = SubjectApplication(FollowupSubject, "followup", postgres_env(database_url, "followup"))

    def record(subject, subject_id: str, term: str) -> tuple:
        fields = dict(
            ae_id=uuid.uuid4(),
            term=term,
            category="OTHER",
            grade=1,
            serious=False,
            seriousness_criteria=(),
            relatedness="possible",
            expected=None,
            aware_at=now - timedelta(days=2),
            crs=None,
            icans=None,
            gvhd=None,
        )
        # A NUL cannot come in through the API any more; events stored before that may still hold one.
        payload = AEReported.model_construct(**fields) if "\x00" in term else AEReported(**fields)
        meta = EventMeta(
            subject_id=subject_id,
            occurred_at=now - timedelta(days=2),
            protocol_version="t@1",
            recorded_by=RecordedBy(user_id="u1", role="coordinator"),
        )
        subject = FollowupSubject.record_into(subject, meta, payload)
        return subject, app.commit(subject)[0]

    try:
        subject, poison = record(None, POISONED, "Rash\x00")
        _, after = record(subject, POISONED, "Fever")
        _, other = record(None, OTHER, "Nausea")
    finally:
        app.close()
    return {POISONED: [poison, after], OTHER: [other]}


def running_service(spec, settings: Settings, directory: Path):
    """`shared.service.running` as a service process runs it, with keys made in `directory` and the
    test issuer's public keys."""
    from shared.service import running, service_keys

    ensure_keys(directory / "keys", SOURCES)
    settings = settings.model_copy(
        update={
            "keys_dir": directory / "keys",
            "oidc_issuer": ISSUER.url,
            "oidc_jwks": str(ISSUER.directory / "jwks.json"),
        }
    )
    return running(spec, settings, service_keys(settings, spec))
