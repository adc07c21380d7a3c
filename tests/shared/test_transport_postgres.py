"""PostgreSQL over TLS, for real: a server of its own that refuses plain connections, with a certificate
for `localhost` signed by a test CA. The service's pool and event store, and the operator commands,
connect with sslmode=verify-full; a wrong CA or host name is refused, by every client, saying why."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from eventsourcing.utils import Environment

from infra.embedded import free_port
from services.enrollment.domain import EnrollmentSubject
from services.enrollment.main import SPEC
from shared import db
from shared.config import Settings
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.eventstore.factory import TLSPostgresFactory
from shared.transport import TransportError
from support import running_service
from tls_support import Authority, Issued, TLSPostgres, postgres_with_tls

ROOT = Path(__file__).resolve().parents[2]
SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@dataclass(frozen=True)
class Tls:
    server: TLSPostgres
    ca: Authority
    other_ca: Authority
    client: Issued  # the certificate of the user `mtls`, who logs in with it

    def url(self, **params: str) -> str:
        return self.server.url("ucart", **params)

    def verified(self, **params: str) -> str:
        return self.url(sslmode="verify-full", sslrootcert=str(self.ca.cert), **params)


@pytest.fixture(scope="module")
def tls(tmp_path_factory) -> Iterator[Tls]:
    bin_dir = postgres_with_tls()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server with TLS on this machine (the embedded one is built without TLS)")
    directory = tmp_path_factory.mktemp("tls-pg")
    ca, other = Authority(directory / "ca", "test-ca"), Authority(directory / "other", "other-ca")
    server = TLSPostgres(bin_dir, directory / "pg", ca.issue("postgres", dns=("localhost",)), ca.cert).start()
    try:
        admin = server.url("postgres", sslmode="verify-full", sslrootcert=str(ca.cert))
        asyncio.run(db.ensure_database(admin, "ucart"))  # the demo's first connection, over TLS
        asyncio.run(execute(admin, "CREATE ROLE mtls LOGIN SUPERUSER"))
        yield Tls(server, ca, other, ca.issue("mtls", client=True))
    finally:
        server.stop()


async def execute(url: str, sql: str) -> None:
    conn = await db.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fetch(url: str, sql: str) -> object:
    conn = await db.connect(url)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def libpq_connect(url: str) -> psycopg.Connection:
    """A connection with exactly the options the event store's factory gives psycopg."""
    factory = TLSPostgresFactory(Environment("enrollment", postgres_env(url, "enrollment")))
    return psycopg.connect(**factory.datastore.pool.kwargs, connect_timeout=5)


async def test_a_service_keeps_its_pool_and_its_event_store_on_verify_full(tls: Tls, tmp_path):
    settings = Settings(
        _env_file=None,
        database_url=tls.verified(),
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # not needed here: it keeps retrying
        topic_prefix=f"t{uuid.uuid4().hex[:8]}.",
    )
    async with running_service(SPEC, settings, tmp_path) as rt:
        assert await rt.pool.fetchval(SSL_IN_USE) is True

        def store_connection() -> tuple[str, object]:
            with rt.store.recorder.datastore.get_connection() as conn:
                return conn.info.dsn, conn.execute(SSL_IN_USE).fetchone()

        dsn, row = await asyncio.to_thread(store_connection)
        assert "sslmode=verify-full" in dsn and f"sslrootcert={tls.ca.cert}" in dsn
        assert row == {"ssl": True}


async def test_a_wrong_ca_or_host_name_is_refused_saying_why(tls: Tls):
    wrong_ca = tls.url(sslmode="verify-full", sslrootcert=str(tls.other_ca.cert))
    with pytest.raises(TransportError, match=r"^PostgreSQL's certificate does not verify \(self-signed certificate"):
        await db.create_pool(wrong_ca)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        libpq_connect(wrong_ca)
    store_env = postgres_env(wrong_ca, "enrollment")
    with pytest.raises(OperationalError):  # the event store does not connect either (its pool times out)
        await asyncio.to_thread(SubjectApplication, EnrollmentSubject, "enrollment", store_env)

    # The certificate names localhost only: verify-full refuses 127.0.0.1, verify-ca does not check names.
    by_address = {"sslrootcert": str(tls.ca.cert)}
    url = tls.server.url("ucart", host="127.0.0.1", sslmode="verify-full", **by_address)
    with pytest.raises(TransportError, match=r"IP address mismatch.*check sslrootcert and the host name"):
        await db.connect(url)
    with pytest.raises(psycopg.OperationalError, match=r'does not match host name "127\.0\.0\.1"'):
        libpq_connect(url)
    url = tls.server.url("ucart", host="127.0.0.1", sslmode="verify-ca", **by_address)
    assert await fetch(url, SSL_IN_USE) is True
    with libpq_connect(url) as conn:
        assert conn.pgconn.ssl_in_use


async def test_require_encrypts_without_verifying_and_plain_connections_are_refused(tls: Tls):
    url = tls.url(sslmode="require")
    assert await fetch(url, SSL_IN_USE) is True
    with libpq_connect(url) as conn:
        assert conn.pgconn.ssl_in_use
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
        await fetch(tls.url(sslmode="disable"), "SELECT 1")


async def test_mutual_tls_logs_in_with_the_client_certificate(tls: Tls):
    certificate = {"sslcert": str(tls.client.cert), "sslkey": str(tls.client.key)}
    url = tls.server.url("ucart", user="mtls", sslmode="verify-full", sslrootcert=str(tls.ca.cert), **certificate)
    assert await fetch(url, "SELECT current_user") == "mtls"
    with libpq_connect(url) as conn:
        assert conn.execute("SELECT current_user").fetchone() == {"current_user": "mtls"}
    without = tls.server.url("ucart", user="mtls", sslmode="verify-full", sslrootcert=str(tls.ca.cert))
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="requires a valid client certificate"):
        await fetch(without, "SELECT 1")


def ucart(*args: str, database_url: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCART_")} | {"DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "infra", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_the_operator_commands_connect_over_tls_and_say_why_they_cannot(tls: Tls):
    verified = ucart("verify", database_url=tls.verified())
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Every chained event is intact" in verified.stdout

    refused = ucart("parked", "list", database_url=tls.url(sslmode="verify-full", sslrootcert=str(tls.other_ca.cert)))
    assert refused.returncode == 2
    assert "Error: PostgreSQL's certificate does not verify (self-signed certificate in certificate chain)" in (
        " ".join(refused.stderr.split())
    )
    assert "Traceback" not in refused.stderr
