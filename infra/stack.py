"""The whole product on one machine: PostgreSQL, the broker and the three services.

Embedded servers are used unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS point elsewhere. The embedded
broker is Apache Kafka where Java 17+ and its jars are installed, else Tansu (memory only); UCART_BROKER
chooses.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from infra.embedded import EmbeddedKafka, EmbeddedPostgres
from infra.kafka import EmbeddedApacheKafka, embedded_broker
from infra.kafka.security import BrokerSecurity
from infra.processes import ServiceGroup, ServiceProcess, service_env
from shared import db
from shared.config import Settings
from shared.contract.topics import SOURCES, Source
from shared.signing import ensure_keys

DATABASE = "ucart"


class Stack:
    def __init__(self, settings: Settings, database: str = DATABASE):
        self.settings = settings
        self.database = database
        self.data_dir = Path(settings.data_dir).resolve()
        self.log_dir = self.data_dir / "logs"
        self.postgres: EmbeddedPostgres | None = None
        self.kafka: EmbeddedApacheKafka | EmbeddedKafka | None = None
        self.security: BrokerSecurity | None = None
        self.services: ServiceGroup | None = None
        self.issuer: ServiceProcess | None = None
        self.database_url = ""
        self.bootstrap_servers = ""

    def start_infrastructure(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        server_url = self.settings.database_url
        if server_url is None:
            self.postgres = EmbeddedPostgres(self.data_dir / "pg")
            server_url = self.postgres.start()
            self.database_url = asyncio.run(db.ensure_database(server_url, self.database))
        else:
            self.database_url = server_url
        if self.settings.kafka_bootstrap_servers is None:
            # UCART_BROKER chooses; unset, Apache Kafka (its log under data_dir/kafka) where it can run, else Tansu.
            kafka_dir = self.data_dir / "kafka"
            if self.settings.kafka_embedded_sasl:
                self.security = BrokerSecurity(kafka_dir, self.settings.topic_prefix)
            self.kafka = embedded_broker(
                self.settings.kafka_port, self.log_dir / "broker.log", kafka_dir, self.settings.broker, self.security
            )
            kind = "tansu" if isinstance(self.kafka, EmbeddedKafka) else "kafka"
            self.settings = self.settings.model_copy(update={"broker": kind})  # what the services are told
            self.bootstrap_servers = self.kafka.start()
        else:
            self.bootstrap_servers = self.settings.kafka_bootstrap_servers

    def start_services(self) -> None:
        """The services' keys (made the first time: production provisions its own), the local issuer (its
        keys and JWKS exist already: `infra.identities.prepare`), then the services."""
        ensure_keys(self.settings.signing_keys_dir.resolve(), SOURCES)
        env = service_env(self.settings, self.database_url, self.bootstrap_servers)
        url = f"http://{self.settings.host}:{self.settings.issuer_port}"
        self.issuer = ServiceProcess("issuer", env, url, self.log_dir / "issuer.log", module="infra.issuer")
        self.issuer.start()
        self.issuer.wait_healthy()
        self.services = ServiceGroup(
            self.settings, self.database_url, self.bootstrap_servers, self.log_dir, self.principals()
        )
        self.services.start()

    def principals(self) -> dict[Source, Settings]:
        """With the embedded broker secured, each service connects as its own principal."""
        if self.security is None:
            return {}
        return {name: self.settings.model_copy(update=self.security.settings(name)) for name in SOURCES}

    def stop(self) -> None:
        if self.services:
            self.services.stop()
        if self.issuer:
            self.issuer.stop()
        if self.kafka:
            self.kafka.stop()
        if self.postgres:
            self.postgres.stop()
