"""Rebuilding and replaying read models: from the event stores and from Kafka, equal to the live ones."""

from __future__ import annotations

import asyncio

import pytest

from infra import replay
from services import registry
from shared import db
from shared.signing import load_verifier
from support import RunningStack, at, eventually, journey_caught_up, treat


@pytest.fixture(scope="module")
def settled(stack: RunningStack) -> RunningStack:
    treat(stack, "UCT-09-601", infusion_days_ago=8)
    ae = {
        "term": "Cytokine release syndrome",
        "category": "CRS",
        "grade": 1,
        "serious": False,
        "relatedness": "probable",
        "aware_at": at(7),
    }
    assert stack.command_when_known("followup", "/subjects/UCT-09-601/adverse-events", at(7), ae).status_code == 201
    eventually(lambda: journey_caught_up(stack.database_url))
    return stack


def run(coro_fn, stack: RunningStack):
    async def main():
        pool = await db.create_pool(stack.database_url)
        try:
            return await coro_fn(pool)
        finally:
            await pool.close()

    return asyncio.run(main())


def test_a_projection_built_from_the_event_stores_equals_the_live_one(settled: RunningStack):
    ticks: list[int] = []
    for name in ("journey", "treatment-facts", "followup-facts"):
        compared = run(lambda pool, name=name: replay.compare_with_stores(pool, name, progress=ticks.append), settled)
        assert compared.differences == [] and compared.parked == []
    assert sum(ticks) > 0


def test_a_projection_replayed_from_kafka_equals_the_live_one(settled: RunningStack):
    verifier = load_verifier(settled.keys_dir)
    diffs = run(lambda pool: replay.compare_with_kafka(pool, "journey", settled.settings, verifier), settled)
    assert diffs.differences == [] and diffs.parked == []


def test_a_rebuilt_live_projection_comes_back_whole(settled: RunningStack):
    async def rebuild_and_compare(pool):
        total = await replay.count_events(pool, registry.named("journey").sources)
        applied = await replay.rebuild(pool, "journey")
        return total, applied, await replay.compare_with_stores(pool, "journey")

    total, applied, diffs = run(rebuild_and_compare, settled)
    assert applied <= total and diffs.differences == []
    eventually(lambda: journey_caught_up(settled.database_url))


def test_compare_notices_a_live_projection_that_drifted(settled: RunningStack):
    async def drift_and_compare(pool):
        await pool.execute(
            "UPDATE followup.journeys SET journey = jsonb_set(journey, '{site_id}', '\"99\"') "
            "WHERE subject_id = 'UCT-09-601'"
        )
        try:
            return await replay.compare_with_stores(pool, "journey")
        finally:
            await replay.rebuild(pool, "journey")

    assert run(drift_and_compare, settled).differences == ["UCT-09-601: differs"]
