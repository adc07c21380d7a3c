"""/ready tells apart a service that cannot work ("not ready") from one that works badly ("degraded"):
a relay that keeps failing, events left parked. Both answer 503 with the reason, and clear by themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import asyncpg
import pytest

from faults_support import fault_stack
from shared.contract.topics import SOURCES
from support import RunningStack, at, enrolment, eventually

RELAY_FAILING_SECONDS = 3


@pytest.fixture(scope="module")
def degradable(servers, tmp_path_factory) -> Iterator[RunningStack]:
    """A stack of this module's own (its /ready must be free to fail) that reports a failing relay soon."""
    with fault_stack(
        servers, tmp_path_factory.mktemp("ready"), ready_relay_failing_seconds=RELAY_FAILING_SECONDS
    ) as running:
        yield running


def test_a_relay_failing_for_too_long_makes_its_service_degraded(degradable: RunningStack):
    all_ready(degradable)
    sql(degradable, "ALTER TABLE enrollment.outbox_position RENAME TO outbox_position_away")  # the relay fails
    response = degradable.command("enrollment", "/subjects/UCT-25-001/enrolment", at(12), enrolment(12))
    assert response.status_code == 201  # commands still succeed; their events wait in the outbox

    ready = eventually(lambda: (r := degradable.get("enrollment", "/ready")).status_code == 503 and r.json())
    assert ready["status"] == "degraded"
    assert {name: v for name, v in ready["checks"].items() if v != "ok"} == {"relay": ready["checks"]["relay"]}
    assert ready["checks"]["relay"].startswith("failing for ")
    assert "UndefinedTableError" in ready["checks"]["relay"]
    assert degradable.get("treatment", "/ready").status_code == 200  # the others are not concerned

    sql(degradable, "ALTER TABLE enrollment.outbox_position_away RENAME TO outbox_position")
    all_ready(degradable)  # the relay caught up by itself


def test_parked_events_make_their_service_degraded_until_resolved(degradable: RunningStack):
    all_ready(degradable)
    # Three messages no event store holds (only recorded: nothing for the consumer to step over).
    sql(
        degradable,
        """INSERT INTO followup.parked_events (consumer, in_store, body, reason)
                  SELECT 'followup-journey', false, 'x'::bytea, 'test' FROM generate_series(1, 3)""",
    )

    ready = degradable.get("followup", "/ready")
    assert ready.status_code == 503 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["parked"] == "3 event(s) parked for followup-journey: see `ucart parked list`"
    assert {name for name, v in ready.json()["checks"].items() if v != "ok"} == {"parked"}

    sql(degradable, "UPDATE followup.parked_events SET resolved_at = now()")
    assert degradable.get("followup", "/ready").status_code == 200


def all_ready(stack: RunningStack) -> None:
    for service in SOURCES:
        eventually(lambda service=service: stack.get(service, "/ready").status_code == 200)


def sql(stack: RunningStack, statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(stack.database_url)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())
