"""/ready tells apart a service that cannot work ("not ready") from one that works badly ("degraded"):
a relay that keeps failing, events left parked. Both answer 503 with the reason, and clear by themselves."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
from conftest import drop_database, new_database
from faults_support import RECONCILE_SECONDS, stop_all
from support import RunningStack, at, enrolment, eventually

from infra.processes import ServiceGroup

RELAY_FAILING_SECONDS = 3


def test_a_relay_failing_for_too_long_makes_its_service_degraded(servers, tmp_path):
    with short_thresholds_stack(servers, tmp_path) as stack:
        all_ready(stack)
        sql(stack, "ALTER TABLE enrollment.outbox_position RENAME TO outbox_position_away")  # the relay fails
        response = stack.command("enrollment", "/subjects/UCT-25-001/enrolment", at(12), enrolment(12))
        assert response.status_code == 201  # commands still succeed; their events wait in the outbox

        ready = eventually(lambda: (r := stack.get("enrollment", "/ready")).status_code == 503 and r.json())
        assert ready["status"] == "degraded"
        assert {name: v for name, v in ready["checks"].items() if v != "ok"} == {"relay": ready["checks"]["relay"]}
        assert ready["checks"]["relay"].startswith("failing for ")
        assert "UndefinedTableError" in ready["checks"]["relay"]
        assert stack.get("treatment", "/ready").status_code == 200  # the others are not concerned

        sql(stack, "ALTER TABLE enrollment.outbox_position_away RENAME TO outbox_position")
        all_ready(stack)  # the relay caught up by itself


def test_parked_events_make_their_service_degraded_until_resolved(servers, tmp_path):
    with short_thresholds_stack(servers, tmp_path) as stack:
        all_ready(stack)
        # Three messages no event store holds (only recorded: nothing for the consumer to step over).
        sql(stack, """INSERT INTO followup.parked_events (consumer, in_store, body, reason)
                      SELECT 'followup-journey', false, 'x'::bytea, 'test' FROM generate_series(1, 3)""")

        ready = stack.get("followup", "/ready")
        assert ready.status_code == 503 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["parked"] == "3 event(s) parked for followup-journey: see `ucart parked list`"
        assert {name for name, v in ready.json()["checks"].items() if v != "ok"} == {"parked"}

        sql(stack, "UPDATE followup.parked_events SET resolved_at = now()")
        assert stack.get("followup", "/ready").status_code == 200


@contextmanager
def short_thresholds_stack(servers, tmp_path) -> Iterator[RunningStack]:
    """A stack of this test's own (like `fault_stack`) whose /ready reports a failing relay after
    RELAY_FAILING_SECONDS."""
    database_url = new_database(servers[0])
    stack = RunningStack(database_url, servers[1], f"f{uuid.uuid4().hex[:8]}.", tmp_path / "logs",
                         reconcile_seconds=RECONCILE_SECONDS)
    stack.settings = stack.settings.model_copy(update={"ready_relay_failing_seconds": RELAY_FAILING_SECONDS})
    stack.group = ServiceGroup(stack.settings, database_url, servers[1], tmp_path / "logs")
    try:
        with stack:
            try:
                yield stack
            finally:
                stop_all(stack)
    finally:
        drop_database(servers[0], database_url)


def all_ready(stack: RunningStack) -> None:
    for service in ("enrollment", "treatment", "followup"):
        eventually(lambda: stack.get(service, "/ready").status_code == 200)


def sql(stack: RunningStack, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())
