"""Schemathesis against each service's OpenAPI document, with real PostgreSQL and a real broker.

No input gives a 5xx, and every answer is the one documented: its status, its content type and its
body's schema. Every schemathesis check runs, with a bounded number of examples per operation and a
fixed seed (the same requests each run); schemathesis.toml beside this file says which refusals of a
schema-valid request are right, and why.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from shared.contract.topics import SOURCES
from support import ISSUER, TEST_ADMIN, RunningStack, at, treat

CONFIG = Path(__file__).with_name("schemathesis.toml")
KNOWN = "UCT-99-001"  # the subject schemathesis.toml names: enrolled and infused before the run
EXAMPLES = 10  # per operation and phase
SEED = 20261130


@pytest.fixture(scope="module")
def fuzzed(servers, tmp_path_factory):
    """A stack of its own: the fuzzer stores whatever it may, which no other test should see."""
    from conftest import drop_database, new_database

    url = new_database(servers[0])
    # The fuzzer is a study admin by configuration too: it may revoke its own grants, not that.
    admins = (TEST_ADMIN, "fuzzer")
    logs, keys = tmp_path_factory.mktemp("logs"), tmp_path_factory.mktemp("keys")
    with RunningStack(url, servers[1], f"fz{uuid.uuid4().hex[:8]}.", logs, keys_dir=keys, study_admins=admins) as stack:
        treat(stack, KNOWN, infusion_days_ago=10)
        # Once follow-up has learned of the infusion, commands about the subject reach its rules.
        assert (
            stack.command_when_known("followup", f"/subjects/{KNOWN}/visits", at(9), {"visit_code": "D1"}).status_code
            == 201
        )
        yield stack
    drop_database(servers[0], url)


def schemathesis(stack: RunningStack, service: str, workdir: Path) -> subprocess.Popen:
    """Start schemathesis on one service, writing its report to workdir/report.txt."""
    workdir.mkdir()
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        stack.url(service, "/openapi.json"),
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--no-color",
        "--header",
        f"Authorization: Bearer {ISSUER.token('fuzzer')}",
    ]
    with (workdir / "report.txt").open("w") as report:
        return subprocess.Popen(command, cwd=workdir, stdout=report, stderr=subprocess.STDOUT)


def test_no_input_breaks_a_service_or_its_openapi(fuzzed: RunningStack, tmp_path: Path):
    runs = {service: schemathesis(fuzzed, service, tmp_path / service) for service in SOURCES}  # side by side
    try:
        failed = [service for service, run in runs.items() if run.wait(timeout=300) != 0]
    finally:
        for run in runs.values():
            run.kill()
    reports = {service: (tmp_path / service / "report.txt").read_text() for service in SOURCES}
    assert not failed, "\n\n".join(f"===== {service}\n{reports[service]}" for service in failed)
    assert all("generated" in report for report in reports.values()), reports
