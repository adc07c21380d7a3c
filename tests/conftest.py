"""Test infrastructure: one real PostgreSQL and one real Kafka-protocol broker per test session.

The broker is Apache Kafka, or Tansu (memory only) with UCART_BROKER=tansu or where Java 17+ or the
Kafka jars are missing. Tests of what only one of them does are marked `@pytest.mark.broker("kafka")` / `("tansu")`.

By default both are embedded (started here on free ports, in temporary directories, and stopped even
when tests fail). DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS point the suite at other servers instead;
UCART_TESTCONTAINERS=1 uses testcontainers when a Docker engine answers. Each test (or module) gets
its own database and its own topic prefix, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from infra.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from infra.kafka import embedded_broker
from shared import db
from shared.contract.topics import SOURCES
from shared.signing import Verifier, ensure_keys, load_verifier


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def servers(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(PostgreSQL server URL, Kafka bootstrap servers)."""
    with ExitStack() as stack:
        pg_url = os.environ.get("DATABASE_URL")
        kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        use_docker = os.environ.get("UCART_TESTCONTAINERS") == "1" and _docker_available()
        if pg_url is None and use_docker:
            from testcontainers.postgres import PostgresContainer

            container = stack.enter_context(PostgresContainer("postgres:16", driver=None))
            pg_url = container.get_connection_url()
        if kafka is None and use_docker:
            from testcontainers.kafka import KafkaContainer

            kafka = stack.enter_context(KafkaContainer()).get_bootstrap_server()
        if pg_url is None:
            postgres = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "data")
            pg_url = postgres.start()
            stack.callback(postgres.stop)
        if kafka is None:
            # UCART_BROKER chooses (kafka or tansu); unset, Apache Kafka where it can run, else Tansu.
            directory = tmp_path_factory.mktemp("kafka")
            broker = embedded_broker(free_port(), directory / "broker.log", directory / "data")
            kafka = broker.start()
            stack.callback(broker.stop)
            # What the tests' Settings and the services they start take the broker for.
            os.environ["UCART_BROKER"] = "tansu" if isinstance(broker, EmbeddedKafka) else "kafka"
        yield pg_url, kafka


def new_database(server_url: str) -> str:
    return asyncio.run(db.ensure_database(server_url, f"ucart_t_{uuid.uuid4().hex[:12]}"))


def drop_database(server_url: str, url: str) -> None:
    async def drop() -> None:
        conn = await db.connect(server_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def database_url(servers) -> Iterator[str]:
    url = new_database(servers[0])
    yield url
    drop_database(servers[0], url)


@pytest.fixture
def bootstrap_servers(servers) -> str:
    return servers[1]


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory) -> Path:
    """The services' Ed25519 keys for this session (private and public), in a directory of its own."""
    keys_dir = tmp_path_factory.mktemp("keys")
    ensure_keys(keys_dir, SOURCES)
    return keys_dir


@pytest.fixture(scope="session")
def verifier(signing_keys) -> Verifier:
    return load_verifier(signing_keys)


@pytest.fixture(scope="session")
def stack(servers, tmp_path_factory, signing_keys):
    """The three services as real processes (shared by the end-to-end tests: use distinct subject ids)."""
    from support import RunningStack

    url = new_database(servers[0])
    logs = tmp_path_factory.mktemp("logs")
    with RunningStack(url, servers[1], f"e2e{uuid.uuid4().hex[:8]}.", logs, keys_dir=signing_keys) as running:
        yield running
    drop_database(servers[0], url)


@pytest.fixture(scope="module")
def cohort_stack(servers, tmp_path_factory):
    """A stack holding the demo cohort only (`infra/seed.py`), so that the study tables and the
    dashboard's screenshots see exactly it. Per module: a stack holds some 30 connections, and one kept
    for the whole session leaves too few for the fault tests' own stacks."""
    from infra import seed
    from support import ISSUER, TEST_USER, RunningStack

    url = new_database(servers[0])
    logs, keys = tmp_path_factory.mktemp("logs"), tmp_path_factory.mktemp("keys")
    with RunningStack(url, servers[1], f"c{uuid.uuid4().hex[:8]}.", logs, keys_dir=keys) as running:
        seed.seed(running.settings, ISSUER.token(TEST_USER))
        yield running
    drop_database(servers[0], url)


def pytest_report_header(config: pytest.Config) -> str:
    """Which broker this run uses, and why when it is the memory-only fallback."""
    from infra import kafka

    choice = os.environ.get("UCART_BROKER")
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        return f"broker: the one at KAFKA_BOOTSTRAP_SERVERS, taken for {choice or 'a real Kafka'}"
    if choice:
        name = "Tansu (memory only)" if choice == "tansu" else "Apache Kafka"
        return f"broker: embedded {name}, UCART_BROKER={choice}"
    if kafka.available():
        return "broker: embedded Apache Kafka"
    why = kafka.missing() or "its jars are not installed: python -m infra install-kafka"
    return f"broker: embedded Tansu (memory only), as Apache Kafka cannot run here: {why}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "broker(kind): runs only on that broker, kafka or tansu (skipped on the other)")


@pytest.fixture(autouse=True)
def _on_its_broker(request: pytest.FixtureRequest) -> None:
    """A test of what only one broker does (Tansu forgets everything on a restart; Apache Kafka keeps
    its log) runs on that broker's pass of the suite and is skipped, saying so, on the other's."""
    marker = request.node.get_closest_marker("broker")
    if marker is None:
        return
    request.getfixturevalue("servers")  # the session's broker is chosen there
    kind = os.environ.get("UCART_BROKER") or "kafka"  # a broker at KAFKA_BOOTSTRAP_SERVERS is a real Kafka
    if kind != marker.args[0]:
        why = marker.kwargs.get("why")
        pytest.skip(f"only on {marker.args[0]} (this run's broker is {kind})" + (f": {why}" if why else ""))
