"""The operator commands, run as a person would: `python -m infra verify | rebuild | compare | token`."""

from __future__ import annotations

import asyncio

import asyncpg

from shared import db
from shared.access import grants
from shared.access.tokens import TokenVerifier
from shared.eventstore import subject_uuid
from support import RunningStack, at, eventually, journey_caught_up, treat, ucart


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
