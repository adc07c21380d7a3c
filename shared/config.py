"""Configuration from the environment (12-factor). Defaults are the embedded laptop set-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.contract.topics import Source
from shared.protocol import DEFAULT_PROTOCOL_FILE

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
        description="PostgreSQL URL; unset means the embedded server under data_dir.",
    )
    kafka_bootstrap_servers: str | None = Field(
        None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "UCART_KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means the embedded broker on kafka_port.",
    )
    kafka_port: int = 9092
    topic_prefix: str = Field("", description="Namespace for topic and group names, e.g. 'staging.'.")
    topic_partitions: int = Field(3, ge=1)
    protocol_file: Path = DEFAULT_PROTOCOL_FILE
    host: str = "127.0.0.1"
    enrollment_port: int = DEFAULT_PORTS["enrollment"]
    treatment_port: int = DEFAULT_PORTS["treatment"]
    followup_port: int = DEFAULT_PORTS["followup"]
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
