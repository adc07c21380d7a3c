"""The batch path keeps the one-at-a-time path honest: the same random events, redeliveries among them,
applied one at a time and in batches of any size give identical read models and tracking, for every
read model of the product, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Sequence

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services import registry
from shared import db
from shared.consumer import Event, IdempotentConsumer
from shared.contract.upcasting import latest_payload
from shared.readmodel import ReadModel
from shared.signing import Verifier
from tests.services.followup.envelopes import envelope
from tests.services.followup.histories import Chain, at, histories, interleave

STORES_ONLY = Verifier({})  # the batches are applied directly: no message to verify


def delivered(cohort: list[Chain], rng: random.Random, redeliveries: int) -> list[Event]:
    """The cohort's events as the topics could deliver them: each stream numbered in the order it recorded
    its events, the subjects interleaved, and some events delivered again later."""
    streams: list[list[Event]] = []
    for i, history in enumerate(cohort):
        subject, versions = f"UCT-01-{i:03d}", Counter[str]()
        events = []
        for payload, on in history:
            versions[payload.source] += 1
            e = envelope(payload, at(on), subject_id=subject, stream_version=versions[payload.source])
            events.append((e, latest_payload(e)))
        streams.append(events)
    merged = interleave(streams, rng)  # type: ignore[arg-type]  # any chains
    for _ in range(redeliveries):
        position = rng.randrange(len(merged))
        merged.insert(rng.randrange(position, len(merged)) + 1, merged[position])
    return merged  # type: ignore[return-value]


async def contents(conn: asyncpg.Connection, model: ReadModel, schema: str) -> tuple[object, ...]:
    """The read model's rows and its consumer's tracking, comparable."""
    rows = await conn.fetch(f"SELECT * FROM {schema}.{model.table} ORDER BY subject_id")
    tracking = await conn.fetch(
        f"""SELECT subject_id, source, last_version FROM {schema}.consumer_applied WHERE consumer = $1
            ORDER BY subject_id, source""",
        model.projection(schema).name,
    )
    table = [{k: json.loads(v) if k == "journey" else v for k, v in r.items() if k != "updated_at"} for r in rows]
    return table, [tuple(r) for r in tracking]


async def compare(database_url: str, events: Sequence[Event], sizes: Sequence[int]) -> None:
    conn = await db.connect(database_url)
    pool = await db.create_pool(database_url)
    try:
        for model in registry.READ_MODELS:
            mine = [e for e in events if e[0].source in model.sources]
            schema = f"b_{model.service}"
            await conn.execute(db.plumbing_ddl(schema) + model.ddl(schema))
            consumer = IdempotentConsumer(model.projection(schema), pool, schema=schema, verifier=STORES_ONLY)
            await consumer.reset()
            one_at_a_time = [await consumer.apply(*event) for event in mine]
            expected = await contents(conn, model, schema)
            for size in sizes:
                await consumer.reset()
                outcomes = []
                for start in range(0, len(mine), size):
                    batch = await consumer.apply_together(mine[start : start + size])
                    assert batch is not None, f"{model.consumer}: a batch of {size} went one at a time"
                    outcomes += batch
                assert outcomes == one_at_a_time, f"{model.consumer}, batches of {size}"
                assert await contents(conn, model, schema) == expected, f"{model.consumer}, batches of {size}"
    finally:
        await pool.close()
        await conn.close()


@settings(
    max_examples=8,
    deadline=None,
    database=None,  # no .hypothesis/ left in the repo
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # one database; each example resets it
)
@given(
    cohort=st.lists(histories(), min_size=1, max_size=3),
    rng=st.randoms(use_true_random=False),
    redeliveries=st.integers(0, 6),
    size=st.integers(1, 120),
)
def test_batches_of_any_size_give_what_one_at_a_time_gives(
    database_url: str, cohort: list[Chain], rng: random.Random, redeliveries: int, size: int
) -> None:
    """Batches of a drawn size (the last one shorter), and everything in one batch."""
    events = delivered(cohort, rng, redeliveries)
    asyncio.run(compare(database_url, events, sorted({min(size, len(events)), len(events)})))
