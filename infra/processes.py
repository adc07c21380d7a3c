"""The three services as separate OS processes, as they run in production."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from pydantic import SecretStr

from shared.config import Settings
from shared.contract.topics import SOURCES, Source

# How the services reach Kafka: UCART_KAFKA_SECURITY_PROTOCOL, UCART_KAFKA_SASL_*, UCART_KAFKA_SSL_*.
KAFKA_TRANSPORT = tuple(n for n in Settings.model_fields if n.startswith(("kafka_security", "kafka_sasl", "kafka_ssl")))


def kafka_transport_env(settings: Settings) -> dict[str, str]:
    """The Kafka TLS and SASL settings as a service reads them (the SASL password only ever goes into its
    environment); files by absolute path, as the services run in the repository."""
    env = {}
    for name in KAFKA_TRANSPORT:
        value = getattr(settings, name)
        if value is not None:
            plain = value.get_secret_value() if isinstance(value, SecretStr) else value
            env[f"UCART_{name.upper()}"] = str(plain.resolve() if isinstance(plain, Path) else plain)
    return env


def service_env(settings: Settings, database_url: str, bootstrap_servers: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCART_")}
    env.update(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap_servers,
        UCART_HOST=settings.host,
        UCART_TOPIC_PREFIX=settings.topic_prefix,
        UCART_TOPIC_PARTITIONS=str(settings.topic_partitions),
        UCART_TOPIC_REPLICATION=str(settings.topic_replication),
        UCART_TOPIC_MIN_INSYNC_REPLICAS=str(settings.min_insync_replicas),
        UCART_PROTOCOL_FILE=str(settings.protocol_file),
        UCART_KEYS_DIR=str(settings.signing_keys_dir.resolve()),  # the processes run from the repository
        UCART_RELAY_POLL_SECONDS=str(settings.relay_poll_seconds),
        UCART_RECONCILE_SECONDS=str(settings.reconcile_seconds),
        UCART_READY_RELAY_FAILING_SECONDS=str(settings.ready_relay_failing_seconds),
        UCART_READY_LAG_WINDOW_SECONDS=str(settings.ready_lag_window_seconds),
        UCART_DATA_DIR=str(settings.data_dir.resolve()),
        UCART_CHECKPOINTS_DIR=str(settings.checkpoints_path.resolve()),
        UCART_CHECKPOINT_SECONDS=str(settings.checkpoint_seconds),
        **{f"UCART_{s.upper()}_PORT": str(settings.port(s)) for s in SOURCES},
        UCART_ISSUER_PORT=str(settings.issuer_port),
        UCART_OIDC_ISSUER=settings.oidc_issuer,
        UCART_OIDC_AUDIENCE=settings.oidc_audience,
        UCART_OIDC_JWKS=settings.jwks if "://" in settings.jwks else str(Path(settings.jwks).resolve()),
        UCART_OIDC_ALGORITHMS=json.dumps(list(settings.oidc_algorithms)),
        UCART_STUDY_ADMINS=json.dumps(list(settings.study_admins)),
        UCART_METRICS_OPEN=str(settings.metrics_open).lower(),
        **kafka_transport_env(settings),
    )
    if settings.broker:
        env["UCART_BROKER"] = settings.broker
    return env


class ServiceProcess:
    def __init__(self, name: str, env: dict[str, str], url: str, log_file: Path, module: str | None = None):
        self.name, self.env, self.url, self.log_file = name, env, url, log_file
        self.module = module or f"services.{name}.main"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
            )

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log_file}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not healthy after {timeout:.0f}s; see {self.log_file}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful: uvicorn drains, the lifespan stops relay, consumers and pool), then kill."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ServiceGroup:
    """Start all three, wait until each answers /health; stop them in reverse order."""

    def __init__(
        self,
        settings: Settings,
        database_url: str,
        bootstrap_servers: str,
        log_dir: Path,
        principals: Mapping[Source, Settings] | None = None,
    ):
        """`principals`: each service's own settings where they differ (its Kafka principal)."""
        self.services = {
            name: ServiceProcess(
                name,
                service_env((principals or {}).get(name, settings), database_url, bootstrap_servers),
                settings.url(name),
                log_dir / f"{name}.log",
            )
            for name in SOURCES
        }

    def start(self) -> None:
        for service in self.services.values():
            service.start()
        try:
            for service in self.services.values():
                service.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for service in reversed(self.services.values()):
            service.stop()

    def __getitem__(self, name: Source) -> ServiceProcess:
        return self.services[name]
