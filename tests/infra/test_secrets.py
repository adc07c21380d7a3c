"""Secrets never appear in what is printed or logged: a database password shows as ***, the Kafka SASL
password not at all."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from conftest import drop_database, new_database

from infra.embedded import free_port
from services.enrollment.main import SPEC
from shared.config import Settings
from shared.redact import mask_url
from support import running_service

ROOT = Path(__file__).resolve().parents[2]


def test_mask_url_hides_the_password_wherever_a_url_carries_it():
    assert mask_url("postgresql://ucart:s3cr%40t@db:5432/ucart") == "postgresql://ucart:***@db:5432/ucart"
    assert (
        mask_url("postgresql://ucart@/ucart?host=/run/pg&password=s3cret&sslmode=require")
        == "postgresql://ucart@/ucart?host=/run/pg&password=***&sslmode=require"
    )
    assert mask_url("host=db password=s3cret dbname=ucart") == "host=db password=*** dbname=ucart"
    assert mask_url("postgresql://ucart@/ucart?host=/run/pg") == "postgresql://ucart@/ucart?host=/run/pg"
    assert mask_url("127.0.0.1:9092,kafka-2:9092") == "127.0.0.1:9092,kafka-2:9092"


def sasl(password: str, **settings: object) -> Settings:
    return Settings(
        _env_file=None,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ucart",
        kafka_sasl_password=password,
        **settings,
    )


def test_the_settings_never_show_a_password():
    settings = sasl("kafka-s3cret", database_url="postgresql://ucart:db-s3cret@db.example/ucart?sslmode=require")
    for shown in (repr(settings), str(settings)):
        assert "db-s3cret" not in shown and "kafka-s3cret" not in shown
        assert "postgresql://ucart:***@db.example/ucart?sslmode=require" in shown


async def test_a_service_logs_neither_password_while_kafka_is_unreachable(database_url, caplog, tmp_path):
    url, db_password = with_password(database_url)
    kafka_password = f"k-{uuid.uuid4().hex[:12]}"
    unreachable = f"127.0.0.1:{free_port()}"
    settings = sasl(kafka_password, database_url=url, kafka_bootstrap_servers=unreachable, topic_prefix="s.")
    caplog.set_level(logging.DEBUG)  # the clients' own debug lines too
    async with running_service(SPEC, settings, tmp_path):
        deadline = time.monotonic() + 30
        while "Kafka not reachable" not in caplog.text:
            assert time.monotonic() < deadline, caplog.text
            await asyncio.sleep(0.2)
    assert f"Kafka not reachable at {unreachable}" in caplog.text
    assert db_password not in caplog.text and kafka_password not in caplog.text


def test_a_service_refuses_settings_that_cannot_work_without_printing_a_password(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UCART_")} | {
        "DATABASE_URL": "postgresql://ucart:db-s3cret@db.example/ucart?sslmode=require",
        "UCART_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "UCART_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "UCART_KAFKA_SASL_PASSWORD": "kafka-s3cret",
        "UCART_KAFKA_SSL_CAFILE": str(tmp_path / "missing-ca.pem"),
    }
    service = [sys.executable, "-m", "services.enrollment.main"]
    started = subprocess.run(service, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert started.returncode == 1
    assert f"UCART_KAFKA_SSL_CAFILE: cannot read {tmp_path / 'missing-ca.pem'}" in started.stderr
    assert "s3cret" not in started.stdout + started.stderr


def test_the_demo_never_prints_or_logs_the_database_password_and_logs_no_token(servers, tmp_path):
    database_url = new_database(servers[0])
    try:
        url, password = with_password(database_url)
        data_dir, printed = tmp_path / "data", tmp_path / "demo.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("UCART_")} | {
            "DATABASE_URL": url,
            "KAFKA_BOOTSTRAP_SERVERS": servers[1],
            "UCART_DATA_DIR": str(data_dir),
            "UCART_TOPIC_PREFIX": f"s{uuid.uuid4().hex[:8]}.",
            "COLUMNS": "250",  # no URL cut by the table
            **{f"UCART_{s}_PORT": str(free_port()) for s in ("ENROLLMENT", "TREATMENT", "FOLLOWUP", "ISSUER")},
        }
        with printed.open("wb") as out:
            demo = subprocess.Popen(
                [sys.executable, "-m", "infra", "demo"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its services are in its process group: none outlives a failure
            )
        try:
            wait_for(printed, "Press Ctrl-C", demo)
            demo.send_signal(signal.SIGINT)
            assert demo.wait(90) == 0, printed.read_text()
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()

        output = printed.read_text()
        assert "Stopped." in output and mask_url(url) in output
        assert password not in output
        logs = [path for path in (data_dir / "logs").rglob("*") if path.is_file()]
        assert {p.name for p in logs} >= {"enrollment.log", "treatment.log", "followup.log"}
        assert not [p for p in logs if password.encode() in p.read_bytes()]
        # It prints a token per demo user to log in with (the seeder's was used for every command),
        # and no log holds one, nor the issuer's private key.
        tokens = json.loads((data_dir / "issuer" / "demo-tokens.json").read_text())
        assert {"study-admin", "coordinator-01", "investigator-02", "auditor", "sponsor"} <= set(tokens)
        assert tokens["coordinator-01"] in output.replace("\n", "")
        secrets = [t.encode() for t in tokens.values()]
        secrets.append(b"".join((data_dir / "issuer" / "signing.key").read_bytes().splitlines()[1:2]))
        assert not [p for p in logs if any(secret in p.read_bytes() for secret in secrets)]
    finally:
        drop_database(servers[0], database_url)


def with_password(url: str) -> tuple[str, str]:
    """The URL with a password (the embedded server trusts local connections and ignores it)."""
    parts = urlsplit(url)
    if parts.password:
        return url, parts.password
    password = f"s3cret-{uuid.uuid4().hex[:12]}"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}")), password


def wait_for(printed: Path, text: str, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while text not in printed.read_text():
        assert process.poll() is None, f"the demo exited with {process.returncode}: {printed.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout:.0f}s: {printed.read_text()}"
        time.sleep(0.5)
