"""The bench's own servers: an embedded PostgreSQL and broker on free ports in a temporary directory,
and, per workload, a fresh database and topic prefix with the three services started on it."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from pathlib import Path

import asyncpg

from infra.embedded import EmbeddedKafka, EmbeddedPostgres, free_port
from infra.identities import Person, ensure_access_tables, grant_all
from infra.issuer import Issuer
from infra.kafka import embedded_broker
from infra.processes import ServiceGroup
from shared import db
from shared.access.policy import ALL_SITES
from shared.config import Settings
from shared.contract.topics import SOURCES, Source
from shared.signing import ensure_keys

USER = "bench-user"  # enters data at every site and closes the queries it opens
PEOPLE = [
    Person(USER, "investigator", (ALL_SITES,), "the bench's data entry"),
    Person(USER, "data_manager", (ALL_SITES,), "the bench's data entry"),
]


class Servers:
    """PostgreSQL and the broker, both embedded, stopped (and their directory removed) by `stop`."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="ucart-bench-"))
        self.postgres = EmbeddedPostgres(self.directory / "pg")
        self.broker = embedded_broker(free_port(), self.directory / "broker.log", self.directory / "kafka", None, None)
        self.issuer = Issuer(self.directory / "issuer", "https://issuer.bench.invalid", "ucart")
        self.keys_dir = self.directory / "keys"
        self.server_url = self.bootstrap = ""

    @property
    def broker_kind(self) -> str:
        return "tansu" if isinstance(self.broker, EmbeddedKafka) else "kafka"

    def start(self) -> None:
        self.server_url = self.postgres.start()
        self.bootstrap = self.broker.start()
        ensure_keys(self.keys_dir, SOURCES)

    def stop(self) -> None:
        try:
            self.broker.stop()
        finally:
            self.postgres.stop()
            shutil.rmtree(self.directory, ignore_errors=True)

    def database(self, name: str) -> str:
        """A new, empty database on the server."""
        return asyncio.run(db.ensure_database(self.server_url, f"bench_{name}_{uuid.uuid4().hex[:6]}"))

    def token(self) -> str:
        return self.issuer.token(USER)

    def deployment(self, name: str, database_url: str | None = None, **settings: object) -> Deployment:
        return Deployment(self, name, database_url=database_url, **settings)


class Deployment:
    """The three services as processes on one database and topic prefix of their own (not started)."""

    def __init__(self, servers: Servers, name: str, *, database_url: str | None = None, **settings: object):
        self.servers = servers
        self.database_url = database_url or servers.database(name)
        self.prefix = f"bench{uuid.uuid4().hex[:6]}."
        self.log_dir = servers.directory / "logs" / name
        self.settings = Settings(
            _env_file=None,
            host="127.0.0.1",
            data_dir=self.log_dir / "data",
            keys_dir=servers.keys_dir,
            topic_prefix=self.prefix,
            enrollment_port=free_port(),
            treatment_port=free_port(),
            followup_port=free_port(),
            database_url=self.database_url,
            kafka_bootstrap_servers=servers.bootstrap,
            broker=servers.broker_kind,
            oidc_issuer=servers.issuer.url,
            oidc_jwks=str(servers.issuer.directory / "jwks.json"),
            **settings,  # type: ignore[arg-type]  # checked by Settings itself
        )
        self.group = ServiceGroup(self.settings, self.database_url, servers.bootstrap, self.log_dir)
        self._granted = False

    def url(self, service: Source) -> str:
        return self.settings.url(service)

    def start(self, only: tuple[Source, ...] = SOURCES) -> None:
        if not self._granted:
            asyncio.run(ensure_access_tables(self.database_url))
            grant_all(self.database_url, PEOPLE, "bench set-up")
            self._granted = True
        started = []
        try:
            for name in only:
                self.group[name].start()
                started.append(name)
            for name in only:
                self.group[name].wait_healthy()
        except BaseException:
            for name in started:
                self.group[name].stop()
            raise

    def stop(self, only: tuple[Source, ...] = SOURCES) -> None:
        for name in reversed(only):
            self.group[name].stop()

    async def connect(self) -> asyncpg.Connection:
        return await db.connect(self.database_url)
