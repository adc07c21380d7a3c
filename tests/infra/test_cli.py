"""The operator and auditor commands, run as a person would: `python -m infra verify | verify-export |
rebuild | compare | token`."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid

import asyncpg
import pytest

from infra.checkpoints import Kept, file_lines
from shared import db
from shared.access import grants
from shared.access.tokens import TokenVerifier
from shared.eventstore import subject_uuid
from shared.eventstore.export import read_export, verify_export
from shared.signing import load_verifier
from support import RunningStack, at, bearer, eventually, journey_caught_up, treat, ucart
from tampering import TAMPERINGS, checkpoint, fill_stores


async def sql(stack: RunningStack, query: str, *args):
    conn = await asyncpg.connect(stack.database_url)
    try:
        return await conn.fetchrow(query, *args)
    finally:
        await conn.close()


def test_verify_passes_then_names_a_tampered_event(stack: RunningStack):
    treat(stack, "UCT-09-701", infusion_days_ago=6)
    eventually(lambda: journey_caught_up(stack.database_url))
    clean = ucart("verify", database_url=stack.database_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "Every chained event is intact" in clean.stdout

    # The infusion of UCT-09-701, as stored: change its dose level behind the application's back.
    row = asyncio.run(
        sql(
            stack,
            """SELECT notification_id, originator_version, state FROM treatment.treatment_events
                                    WHERE originator_id = $1 ORDER BY originator_version DESC LIMIT 1""",
            subject_uuid("UCT-09-701"),
        )
    )
    forged = bytes(row["state"]).replace(b'"dose_level":1', b'"dose_level":2')
    assert forged != bytes(row["state"])
    asyncio.run(
        sql(
            stack,
            "UPDATE treatment.treatment_events SET state = $2 WHERE notification_id = $1",
            row["notification_id"],
            forged,
        )
    )
    tampered = ucart("verify", database_url=stack.database_url)
    assert tampered.returncode == 1
    assert "TAMPERED" in tampered.stdout and f"version {row['originator_version']}" in tampered.stdout
    assert "changed" in tampered.stdout
    # Put the row back so that the shared stack stays sound for the other tests.
    asyncio.run(
        sql(
            stack,
            "UPDATE treatment.treatment_events SET state = $2 WHERE notification_id = $1",
            row["notification_id"],
            bytes(row["state"]),
        )
    )
    assert ucart("verify", database_url=stack.database_url).returncode == 0


def test_compare_and_rebuild_report_with_progress_and_a_count(stack: RunningStack):
    ae = {
        "term": "Fever",
        "category": "OTHER",
        "grade": 1,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(1),
    }
    treat(stack, "UCT-09-702", infusion_days_ago=3)
    assert stack.command_when_known("followup", "/subjects/UCT-09-702/adverse-events", at(1), ae).status_code == 201
    eventually(lambda: journey_caught_up(stack.database_url))
    compared = ucart("compare", "--projection", "journey", database_url=stack.database_url)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "the replica equals the live projection" in compared.stdout
    rebuilt = ucart("rebuild", "--projection", "journey", database_url=stack.database_url)
    assert rebuilt.returncode == 0 and "event(s) applied" in rebuilt.stdout
    eventually(lambda: journey_caught_up(stack.database_url))
    assert ucart("compare", database_url=stack.database_url).returncode == 0


def test_token_grants_the_role_and_prints_a_token_the_services_accept(database_url: str, tmp_path):
    printed = ucart(
        "token", "--user", "cli-auditor", "--role", "auditor", database_url=database_url, UCART_DATA_DIR=str(tmp_path)
    )
    assert printed.returncode == 0, printed.stderr
    jwks = tmp_path / "issuer" / "jwks.json"
    claims = TokenVerifier("http://127.0.0.1:8000", "ucart", ("RS256",), str(jwks)).verify(printed.stdout.strip())
    assert claims.subject == "cli-auditor"

    async def held():
        pool = await db.create_pool(database_url)
        try:
            return await grants.grants_of(pool, "cli-auditor")
        finally:
            await pool.close()

    assert asyncio.run(held()) == [grants.Grant("cli-auditor", "auditor", ("*",))]
    wrong = ucart("token", "--user", "x", "--role", "system", database_url=database_url, UCART_DATA_DIR=str(tmp_path))
    assert wrong.returncode == 2 and "not a study role" in wrong.stderr


def test_a_tls_setting_that_cannot_work_stops_a_command_saying_what_to_set():
    refused = ucart("verify", database_url="postgresql://ucart:s3cret@db.example/ucart?sslmode=verify-full")
    assert refused.returncode == 2
    assert "DATABASE_URL: sslmode=verify-full needs sslrootcert=<file>" in refused.stderr
    refused = ucart(
        "compare", "--from-kafka", database_url="postgresql://db.example/ucart", UCART_KAFKA_SASL_USERNAME="ucart"
    )
    assert refused.returncode == 2
    assert "UCART_KAFKA_SASL_USERNAME set, but UCART_KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in refused.stderr


def _tamper(database_url: str, tamper) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await tamper(conn)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.mark.parametrize("tampering", TAMPERINGS)
def test_verify_against_checkpoints_catches_a_rewrite_the_chain_alone_passes(database_url, tmp_path, tampering):
    keys, kept = tmp_path / "keys", tmp_path / "checkpoints"
    asyncio.run(fill_stores(database_url))
    asyncio.run(checkpoint(database_url, keys, kept))
    anchored = ("verify", "--checkpoints", str(kept), "--keys", str(keys))
    clean = ucart(*anchored, database_url=database_url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "every head the 2 checkpoint(s) signed is in the store" in clean.stdout

    tamper, store, subject, words = TAMPERINGS[tampering]
    _tamper(database_url, tamper)
    plain = ucart("verify", database_url=database_url)
    assert plain.returncode == 0 and "Every chained event is intact." in plain.stdout  # the chain was recomputed
    caught = ucart(*anchored, database_url=database_url, COLUMNS="1000")
    assert caught.returncode == 1, caught.stdout
    (line,) = [line for line in caught.stdout.splitlines() if line.startswith("TAMPERED")]
    assert line.startswith(f"TAMPERED {store}: stream {subject_uuid(subject)} version") and words in line


def test_verify_refuses_a_checkpoint_that_is_not_what_its_service_signed(database_url, tmp_path):
    keys, kept = tmp_path / "keys", tmp_path / "checkpoints"
    asyncio.run(fill_stores(database_url))
    asyncio.run(checkpoint(database_url, keys, kept))
    file = kept / "followup.jsonl"
    message = json.loads(file.read_text())
    message["heads"][0]["version"] = 1  # hide the last AE, as someone who removed it would
    file.write_text(json.dumps(message) + "\n")
    refused = ucart(
        "verify", "--checkpoints", str(kept), "--keys", str(keys), database_url=database_url, COLUMNS="1000"
    )
    assert refused.returncode == 1
    assert f"REFUSED checkpoint {file}:1: signature: does not match" in refused.stdout
    assert "1 checkpoint(s) refused" in refused.stdout
    (tmp_path / "empty").mkdir()
    for nothing, words in (
        (tmp_path / "empty", "nothing to check the stores against"),
        (file.with_suffix(".x"), "no such"),
    ):
        found = ucart("verify", "--checkpoints", str(nothing), "--keys", str(keys), database_url=database_url)
        assert found.returncode == 1 and words in found.stdout, found.stdout


AUDITOR = bearer("auditor-1")


@pytest.fixture(scope="module")
def anchored_stack(servers, tmp_path_factory):
    """A stack of its own whose services sign a checkpoint every half second (when their store moved)."""
    from conftest import drop_database, new_database

    url = new_database(servers[0])
    logs = tmp_path_factory.mktemp("anchored")
    stack = RunningStack(
        url, servers[1], f"ck{uuid.uuid4().hex[:8]}.", logs, keys_dir=logs / "keys", checkpoint_seconds=0.5
    )
    with stack as running:
        yield running
    drop_database(servers[0], url)


def test_an_outsider_verifies_a_subjects_audit_export_with_only_the_public_keys_and_the_checkpoints(
    anchored_stack: RunningStack, tmp_path
):
    stack, subject = anchored_stack, "UCT-09-801"
    treat(stack, subject, infusion_days_ago=4)
    ae = {
        "term": "Fever",
        "category": "OTHER",
        "grade": 2,
        "serious": False,
        "relatedness": "possible",
        "aware_at": at(1),
    }
    assert stack.command_when_known("followup", f"/subjects/{subject}/adverse-events", at(1), ae).status_code == 201
    # What the outsider holds: the public keys and copies of the checkpoint files.
    public, kept = tmp_path / "public", tmp_path / "checkpoints"
    public.mkdir()
    for key in stack.settings.signing_keys_dir.glob("*.pub"):
        shutil.copy(key, public)

    def signed_export() -> str | None:
        """The audit export, once a checkpoint of each store signed everything in it."""
        shutil.copytree(stack.settings.checkpoints_path, kept, dirs_exist_ok=True)
        response = stack.client.get(
            stack.url("followup", f"/subjects/{subject}/history"), params={"format": "audit"}, headers=AUDITOR
        )
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/x-ndjson")
        checks = verify_export(
            read_export(response.text.splitlines()), Kept(load_verifier(public)).signed(file_lines(kept))
        )
        return response.text if all(not c.problems for c in checks) else None

    export = tmp_path / f"{subject}-audit.jsonl"
    export.write_text(eventually(signed_export))
    lines = export.read_text().splitlines()
    assert len(lines) == 1 + 6  # the header; enrolled, three lymphodepletion days, the infusion, the AE

    honest = ucart("verify-export", str(export), "--checkpoints", str(kept), "--keys", str(public), database_url="")
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert "Every one of the 6 event(s) is what its store holds" in honest.stdout

    edited = tmp_path / "edited.jsonl"
    edited.write_text("\n".join([*lines[:-1], lines[-1].replace('"grade":2', '"grade":1')]) + "\n")
    assert edited.read_text() != export.read_text()
    caught = ucart("verify-export", str(edited), "--checkpoints", str(kept), "--keys", str(public), database_url="")
    assert caught.returncode == 1 and "TAMPERED followup" in caught.stdout and "envelope" in caught.stdout

    dropped = tmp_path / "dropped.jsonl"
    dropped.write_text("\n".join(lines[:-1]) + "\n")  # the AE left out
    caught = ucart("verify-export", str(dropped), "--checkpoints", str(kept), "--keys", str(public), database_url="")
    assert caught.returncode == 1 and "events are missing from it" in caught.stdout

    # The operator's view of the same stores: against the files, and against the checkpoint topics.
    keys = ("--keys", str(public))
    files = ucart("verify", "--checkpoints", str(kept), *keys, database_url=stack.database_url)
    assert files.returncode == 0, files.stdout + files.stderr
    topics = ucart(
        "verify",
        "--checkpoints-from-topic",
        *keys,
        database_url=stack.database_url,
        KAFKA_BOOTSTRAP_SERVERS=stack.bootstrap,
        UCART_TOPIC_PREFIX=stack.prefix,
    )
    assert topics.returncode == 0, topics.stdout + topics.stderr
    assert "every head the" in topics.stdout
