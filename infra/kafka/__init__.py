"""Apache Kafka, embedded: one KRaft node (broker and controller in one JVM) with its log on disk.

The official jars come from Maven Central once, at install time (`python -m infra install-kafka`),
into `.cache/` at the top of the checkout; starting the broker downloads nothing. Where Java 17+ or the
jars are missing, `embedded_broker()` falls back to the Tansu broker (memory only).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.embedded import EmbeddedKafka, free_port, wait_for_port

if TYPE_CHECKING:
    from infra.kafka.security import BrokerSecurity

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J2_CONFIG = HERE / "log4j2.properties"
CACHE = HERE.parents[1] / ".cache"  # the project's own, git-ignored: nothing lands in ~/.m2
LIBS = CACHE / "kafka" / "libs"
MARKER = CACHE / "kafka" / "installed"
JAVA_MAJOR = 17


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


@cache
def java_major() -> int | None:
    """The major version of the Java found (JAVA_HOME first, as Kafka's scripts do), or None."""
    java = _java()
    if java is None:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.SubprocessError):
        return None
    # `openjdk version "17.0.15" ...`; Java 8 and older call themselves "1.8.0_…".
    found = re.search(r'version "(?:1\.)?(\d+)', out)
    return int(found.group(1)) if found else None


def _pom_digest() -> str:
    # The marker holds the pom's digest, so a new Kafka version in the pom is fetched again.
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def installed() -> bool:
    return MARKER.is_file() and MARKER.read_text().strip() == _pom_digest()


def available() -> bool:
    """Java 17+ runs here and the jars are installed: the embedded Apache Kafka can start."""
    return (java_major() or 0) >= JAVA_MAJOR and installed()


def missing() -> str | None:
    """Why the jars cannot be installed here (Java 17+ or Maven missing), or None."""
    major = java_major()
    if major is None:
        return "no Java found (JAVA_HOME or java on PATH)"
    if major < JAVA_MAJOR:
        return f"Java {JAVA_MAJOR}+ is needed (found Java {major})"
    if shutil.which("mvn") is None:
        return "no Maven (mvn) found"
    return None


def install(echo: Callable[[str], object] = print) -> None:
    """Copy the broker's jars (pom.xml's dependencies) into .cache/kafka/libs with Maven, once."""
    if installed():
        echo(f"Apache Kafka already installed in {LIBS}")
        return
    if why := missing():
        raise RuntimeError(f"cannot install Apache Kafka: {why}")
    echo(f"Fetching Apache Kafka with Maven into {LIBS} (once)...")
    staging = LIBS.with_name("libs.partial")
    shutil.rmtree(staging, ignore_errors=True)
    maven = subprocess.run(
        [
            "mvn",
            "--batch-mode",
            "--file",
            str(POM),
            f"-Dmaven.repo.local={CACHE / 'maven'}",
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ],
        capture_output=True,
        text=True,
    )
    if maven.returncode != 0:  # Maven's log is long: its end says what failed
        raise RuntimeError("Maven could not fetch Apache Kafka:\n" + "\n".join(maven.stdout.splitlines()[-30:]))
    # Replace the whole directory: jars of two Kafka versions on one classpath would mix.
    MARKER.unlink(missing_ok=True)
    shutil.rmtree(LIBS, ignore_errors=True)
    staging.rename(LIBS)
    MARKER.write_text(_pom_digest() + "\n")
    echo(f"Apache Kafka installed: {len(list(LIBS.glob('*.jar')))} jars in {LIBS}")


def _cluster_id() -> str:
    # Kafka's own Uuid.randomUuid(): 16 random bytes, base64url without padding, never starting with "-".
    while (cluster_id := base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()).startswith("-"):
        pass
    return cluster_id


def server_properties(port: int, controller_port: int, log_dir: Path, security: BrokerSecurity | None = None) -> str:
    settings: dict[str, object] = {
        "node.id": 1,
        "process.roles": "broker,controller",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        # A dynamic quorum (formatted with --standalone) of this node alone; the controller port may
        # differ at each start: a single voter elects itself.
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "log.dirs": log_dir,
        # Topics are created up front with their partitions; a typo must fail, not make a topic.
        "auto.create.topics.enable": "false",
        "num.partitions": 3,
        # One node: every internal topic has one replica.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
        # A lone consumer gets its partitions at once instead of after 3 s.
        "group.initial.rebalance.delay.ms": 0,
        # After a kill the old registration blocks the restarted broker until its session expires
        # (default 9 s); heartbeats every second keep a live one registered.
        "broker.heartbeat.interval.ms": 1000,
        "broker.session.timeout.ms": 4000,
        # The cleaner allocates this on the heap for __consumer_offsets (default 128 MiB; must be > 1 MiB).
        "log.cleaner.dedupe.buffer.size": 2 * 1024 * 1024,
    }
    if security is not None:  # SASL/SCRAM listeners and the authorizer (infra/kafka/security.py)
        settings |= security.properties(port, controller_port)
    return "".join(f"{key}={value}\n" for key, value in settings.items())


async def _cluster_answers(bootstrap_servers: str, options: dict[str, Any]) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=2000, **options)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
        return bool(cluster["brokers"])
    except (KafkaError, OSError):
        return False
    finally:
        await admin.close()


def _answers(bootstrap_servers: str, options: dict[str, Any] | None = None) -> bool:
    """A metadata request returns this broker (an open port alone may still refuse requests)."""
    # In a thread: start() may be called where an event loop already runs.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _cluster_answers(bootstrap_servers, options or {})).result()


class EmbeddedApacheKafka:
    """Apache Kafka in KRaft mode, one node, on 127.0.0.1:`port`; topics, offsets and groups are kept
    in `data_dir` across restarts. With `security`, clients authenticate (SASL/SCRAM) and ACLs authorise
    them (infra/kafka/security.py)."""

    def __init__(
        self,
        port: int,
        log_file: Path | None,
        data_dir: Path,
        heap: str = "512m",
        security: BrokerSecurity | None = None,
    ):
        self.port = port
        self.log_file = log_file
        self.data_dir = Path(data_dir).resolve()
        self.heap = heap
        self.security = security
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        java = _java()
        assert java is not None, "available() first"
        return [
            java,
            f"-Xmx{heap}",
            # C1 only: half the CPU to start (about 4 s instead of 7), and no slower for a broker that
            # lives minutes, since C2's compiling competes with the work it would speed up.
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp",
            str(LIBS / "*"),  # the JVM expands the wildcard itself
            main,
            *args,
        ]

    def _configure(self) -> tuple[str, list[str]]:
        """This node's server.properties, and the options that format its storage the first time: a
        quorum of this node alone, in a new cluster. (A node of a cluster says otherwise.)"""
        properties = server_properties(self.port, free_port(), self.log_dir, self.security)
        return properties, ["--standalone", "-t", _cluster_id()]

    def start(self, timeout: float = 60.0) -> str:
        if not available():
            raise RuntimeError(
                f"Apache Kafka cannot run here: {missing() or 'not installed'}; run `python -m infra install-kafka`"
            )
        try:
            wait_for_port("127.0.0.1", self.port, timeout=0.2)
        except TimeoutError:
            pass
        else:
            raise RuntimeError(f"port {self.port} is already in use: stop what runs there or set UCART_KAFKA_PORT")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "server.properties"
        if self.security is not None:  # the file will hold the admin password: the owner's alone
            config.unlink(missing_ok=True)
            config.touch(0o600)
        properties, format_options = self._configure()
        config.write_text(properties)
        deadline = time.monotonic() + timeout
        with self.log_file.open("ab") if self.log_file else open(os.devnull, "wb") as out:
            # Kafka writes meta.properties (with the cluster id) when formatting: its presence means formatted.
            if not (self.log_dir / "meta.properties").exists():
                subprocess.run(
                    self._java(
                        "kafka.tools.StorageTool",
                        "format",
                        *format_options,
                        "-c",
                        str(config),
                        *([f"@{self.security.format_arguments()}"] if self.security else ()),
                        heap="256m",
                    ),
                    # With security its output lists the SCRAM keys: not in the log.
                    stdout=subprocess.DEVNULL if self.security else out,
                    stderr=out if self.security else subprocess.STDOUT,
                    check=True,
                    timeout=timeout,
                )
                if self.security:
                    self.security.format_arguments_file.unlink()
            self._process = subprocess.Popen(
                self._java("kafka.Kafka", str(config), heap=self.heap), stdout=out, stderr=subprocess.STDOUT
            )
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code, self._process = self._process.returncode, None
                raise RuntimeError(f"Apache Kafka exited with {code}; see {self.log_file or 'its log'}")
            try:
                wait_for_port("127.0.0.1", self.port, timeout=0.5)
            except TimeoutError:
                continue
            if _answers(self.bootstrap_servers, self.security.client_options("admin") if self.security else None):
                if self.security is not None:  # in a thread, as _answers
                    with ThreadPoolExecutor(1) as pool:
                        pool.submit(asyncio.run, self.security.create_acls(self.bootstrap_servers)).result()
                return self.bootstrap_servers
            time.sleep(0.2)
        self.kill()
        raise TimeoutError(f"Apache Kafka did not answer on {self.bootstrap_servers} after {timeout:.0f}s")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM: the broker shuts down in a controlled way and marks its log clean."""
        if self._process is None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("Apache Kafka did not stop within %.0f s; killing it", timeout)
            self._process.kill()
            self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL (for fault tests): the next start recovers the log from disk."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None


def embedded_broker(
    port: int, log_file: Path | None, data_dir: Path, choice: str | None = None, security: BrokerSecurity | None = None
) -> EmbeddedApacheKafka | EmbeddedKafka:
    """The broker UCART_BROKER names: `kafka` (Apache Kafka) or `tansu` (memory only). Unset: Apache
    Kafka where it can run (`available()`), else Tansu."""
    choice = (choice or os.environ.get("UCART_BROKER") or "").strip().lower()
    if choice == "tansu" or (not choice and not available()):
        if security is not None:
            raise RuntimeError("the embedded broker's SASL/SCRAM needs Apache Kafka; Tansu has no authentication")
        return EmbeddedKafka(port, log_file)
    if choice not in ("", "kafka"):
        raise ValueError(f"UCART_BROKER={choice!r}: use kafka or tansu")
    if not available():
        raise RuntimeError(
            f"UCART_BROKER=kafka, but Apache Kafka cannot run here: {missing() or 'not installed'}; "
            "run `python -m infra install-kafka`, or set UCART_BROKER=tansu"
        )
    return EmbeddedApacheKafka(port, log_file, data_dir, security=security)
