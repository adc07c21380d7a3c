"""Configuration from the environment (12-factor). Defaults are the embedded laptop set-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract.topics import Source
from shared.protocol import DEFAULT_PROTOCOL_FILE
from shared.redact import mask_url

DEFAULT_PORTS: dict[Source, int] = {"enrollment": 8001, "treatment": 8002, "followup": 8003}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UCART_", extra="ignore")

    data_dir: Path = Field(Path(".ucart"), description="Embedded PostgreSQL data and logs.")
    keys_dir: Path | None = Field(
        None,
        description="The services' Ed25519 keys: `<service>.key` (private, the service's own) and every "
        "`<key id>.pub` (public, to verify events and checkpoints); default: data_dir/keys.",
    )
    checkpoints_dir: Path | None = Field(
        None,
        description="Where each service appends its signed checkpoints (`<service>.jsonl`); "
        "default: data_dir/checkpoints.",
    )
    checkpoint_seconds: float = Field(
        300.0, gt=0, description="How often each service signs a checkpoint of its chain heads (if its store moved)."
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "UCART_DATABASE_URL"),
        description="PostgreSQL URL, TLS included (sslmode, sslrootcert, sslcert, sslkey, as libpq takes them); "
        "unset means the embedded server under data_dir.",
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "UCART_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means the embedded broker on kafka_port.",
    )
    kafka_port: int = 9092
    # How the Kafka clients reach the brokers (shared/transport.py turns these into client options;
    # PostgreSQL's TLS is given in DATABASE_URL, as libpq takes it).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)."
    )
    kafka_sasl_mechanism: Literal["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"] | None = Field(
        None, description="With SASL_*: SCRAM-SHA-256, SCRAM-SHA-512 or PLAIN."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = Field(
        None,
        description="With SSL or SASL_SSL: the CA certificates (PEM) the brokers' are checked by; unset: the system's.",
    )
    kafka_ssl_certfile: Path | None = Field(None, description="Mutual TLS: the client certificate (PEM).")
    kafka_ssl_keyfile: Path | None = Field(
        None, description="Mutual TLS: the client certificate's key (PEM), unless the certificate file holds it."
    )
    kafka_ssl_check_hostname: bool = Field(True, description="Check that a broker's certificate names its host.")
    topic_prefix: str = Field("", description="Namespace for topic and group names, e.g. 'staging.'.")
    broker: Literal["kafka", "tansu"] | None = Field(
        None,
        description="Which broker: `kafka` (Apache Kafka, or any real Kafka) or `tansu` (the embedded memory-only "
        "broker, which refuses the idempotent producer). Unset: the embedded broker is Apache Kafka where Java 17+ "
        "and its jars are installed, else Tansu; a broker at KAFKA_BOOTSTRAP_SERVERS is taken for a real Kafka.",
    )
    kafka_embedded_sasl: bool = Field(
        False,
        description="The embedded Apache Kafka authenticates each service as its own principal (SASL/SCRAM) and "
        "its ACLs let it write only its own topics (docs/kafka-security.md).",
    )
    topic_partitions: int = Field(3, ge=1, description="Partitions of every topic the services create.")
    topic_replication: int = Field(1, ge=1, description="Replicas of every topic the services create.")
    topic_min_insync_replicas: int | None = Field(
        None,
        ge=1,
        description="min.insync.replicas of every topic the services create; unset: 2 with 3 or more replicas, else 1.",
    )
    protocol_file: Path = DEFAULT_PROTOCOL_FILE
    host: str = "127.0.0.1"
    enrollment_port: int = DEFAULT_PORTS["enrollment"]
    treatment_port: int = DEFAULT_PORTS["treatment"]
    followup_port: int = DEFAULT_PORTS["followup"]
    issuer_port: int = Field(8000, description="The demo's local OIDC issuer.")
    relay_poll_seconds: float = Field(1.0, gt=0)
    reconcile_seconds: float = Field(
        30.0, gt=0, description="How often consumers check the event stores for events Kafka did not deliver."
    )
    ready_relay_failing_seconds: float = Field(
        30.0, gt=0, description="/ready reports degraded once the outbox relay has kept failing for this long."
    )
    ready_lag_window_seconds: float = Field(
        60.0,
        gt=0,
        description="/ready reports degraded when the relay or a consumer lag grew over this window "
        "without ever reaching zero.",
    )

    oidc_issuer: str = Field(
        "http://127.0.0.1:8000", description="The `iss` every access token must carry (the demo's local issuer)."
    )
    oidc_audience: str = Field("ucart", description="The `aud` every access token must carry.")
    oidc_jwks: str | None = Field(
        None,
        description="The issuer's public keys: a JWKS URL, or a file; default: the local issuer's file, "
        "data_dir/issuer/jwks.json.",
    )
    oidc_algorithms: tuple[str, ...] = Field(("RS256",), description="Signature algorithms accepted in tokens.")
    study_admins: tuple[str, ...] = Field(
        (), description="Token subjects who are study admins without a grant: the first admin, who grants the rest."
    )
    metrics_open: bool = Field(
        True,
        description="GET /metrics without a token (keep the port internal); false: a token with any grant.",
    )

    @property
    def tansu(self) -> bool:
        """The broker keeps nothing across a restart and refuses the idempotent producer."""
        return self.broker == "tansu"

    @property
    def min_insync_replicas(self) -> int:
        return self.topic_min_insync_replicas or (2 if self.topic_replication >= 3 else 1)

    @property
    def jwks(self) -> str:
        return self.oidc_jwks or str(self.data_dir / "issuer" / "jwks.json")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # A URL may carry a password (the SASL password is a SecretStr and shows as **********).
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in ("database_url", "kafka_bootstrap_servers") and value else value

    @property
    def signing_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @property
    def checkpoints_path(self) -> Path:
        return self.checkpoints_dir or self.data_dir / "checkpoints"

    def checkpoint_file(self, service: Source) -> Path:
        return self.checkpoints_path / f"{service}.jsonl"

    def port(self, service: Source) -> int:
        port: int = getattr(self, f"{service}_port")
        return port

    def url(self, service: Source) -> str:
        return f"http://{self.host}:{self.port(service)}"

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"
