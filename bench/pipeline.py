"""Workloads over a bulk-generated backlog: relay publishing, projection catch-up from Kafka, and the
rebuild of every projection from the stores."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import OffsetAndMetadata

from bench.baselines import end_offsets
from bench.stack import Deployment
from infra.replay import partitions_of
from services import registry
from shared import db
from shared.consumer import IdempotentConsumer
from shared.contract.topics import SOURCES, Source, topic_for
from shared.readmodel import ReadModel
from shared.signing import Verifier

Advance = Callable[[int], None]
JOURNEY = registry.named("journey")
ROOT = Path(__file__).resolve().parent.parent


async def stored(database_url: str, sources: tuple[Source, ...] = SOURCES) -> int:
    conn = await db.connect(database_url)
    try:
        return sum([await conn.fetchval(f"SELECT count(*) FROM {s}.{s}_events") for s in sources])
    finally:
        await conn.close()


async def applied(database_url: str, model: ReadModel) -> int:
    """Events the read model's consumer has applied (its stream versions are contiguous from 1)."""
    conn = await db.connect(database_url)
    try:
        value = await conn.fetchval(
            f"SELECT coalesce(sum(last_version), 0) FROM {model.service}.consumer_applied WHERE consumer = $1",
            model.consumer,
        )
        return int(value)
    finally:
        await conn.close()


async def skip_store_reconciliation(database_url: str, models: tuple[ReadModel, ...]) -> None:
    """Move the consumers' reconciliation watermarks to the stores' ends: their pass over the stores at
    start then finds nothing, so what they apply comes from Kafka, which is what is measured."""
    conn = await db.connect(database_url)
    try:
        for model in models:
            for source in model.sources:
                last = await conn.fetchval(f"SELECT coalesce(max(notification_id), 0) FROM {source}.{source}_events")
                await conn.execute(
                    f"""INSERT INTO {model.service}.reconcile_position (consumer, source, last_notification_id)
                        VALUES ($1, $2, $3) ON CONFLICT (consumer, source)
                        DO UPDATE SET last_notification_id = EXCLUDED.last_notification_id""",
                    model.consumer,
                    source,
                    last,
                )
    finally:
        await conn.close()


async def wait_for(read: Callable[[], Any], target: int, advance: Advance, timeout: float) -> float:
    """Poll `read()` until it reaches `target`; the seconds it took."""
    started = time.monotonic()
    shown = 0
    while True:
        value = await read()
        if value > shown:
            advance(value - shown)
            shown = value
        if value >= target:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"reached {value} of {target} after {timeout:.0f}s")
        await asyncio.sleep(0.05)


def topics(deployment: Deployment, sources: tuple[Source, ...] = SOURCES) -> list[str]:
    return [topic_for(s, deployment.prefix) for s in sources]


async def relay(deployment: Deployment, events: int, advance: Advance, timeout: float) -> dict[str, Any]:
    """Start the services on stores holding `events` unpublished events; the time until the topics'
    end offsets reach them. The consumers run meanwhile, as they do in production."""
    await skip_store_reconciliation(deployment.database_url, registry.READ_MODELS)
    started = time.monotonic()
    await asyncio.to_thread(deployment.start)
    ready = time.monotonic() - started
    seconds = await wait_for(
        lambda: end_offsets(deployment.servers.bootstrap, topics(deployment)), events, advance, timeout
    )
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "start_s": ready,
    }


async def rewind_group(deployment: Deployment, model: ReadModel) -> None:
    """Commit offset 0 on every partition for the consumer's group (the service is stopped): it reads
    its topics from the start when it comes back."""
    group = f"{deployment.prefix}ucart-{model.consumer}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=deployment.servers.bootstrap, group_id=group, enable_auto_commit=False
    )
    found = await partitions_of(deployment.settings, topics(deployment, model.sources))
    await consumer.start()
    try:
        consumer.assign(found)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in found})
    finally:
        await consumer.stop()


async def catch_up(deployment: Deployment, events: int, advance: Advance, timeout: float) -> dict[str, Any]:
    """With every event on the topics: stop the follow-up service, empty its journey, rewind the
    journey consumer's group, start the service again; the time until the journey has applied them."""
    await asyncio.to_thread(deployment.stop, ("followup",))

    pool = await db.create_pool(deployment.database_url)
    try:
        await IdempotentConsumer(
            JOURNEY.projection(JOURNEY.service), pool, schema=JOURNEY.service, verifier=Verifier({})
        ).reset()
    finally:
        await pool.close()
    await skip_store_reconciliation(deployment.database_url, (JOURNEY,))
    await rewind_group(deployment, JOURNEY)
    started = time.monotonic()
    await asyncio.to_thread(deployment.start, ("followup",))
    seconds = await wait_for(lambda: applied(deployment.database_url, JOURNEY), events, advance, timeout)
    total = time.monotonic() - started
    return {
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "with_start_s": round(total, 2),
    }


def rebuild(database_url: str, model: ReadModel, keys_dir: Path) -> dict[str, Any]:
    """`python -m infra rebuild --projection <alias>` in a child process: its wall time and peak RSS."""
    env = {**os.environ, "DATABASE_URL": database_url, "UCART_KEYS_DIR": str(keys_dir), "COLUMNS": "120"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_before = before.ru_utime + before.ru_stime
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "infra", "rebuild", "--projection", model.alias],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(process.stdout or ()), daemon=True)
    reader.start()
    # The child's own high-water mark: `ru_maxrss` would count the pages it was forked with from this
    # (larger) process, so every child would show at least this process's size.
    peak_kb = 0
    while process.poll() is None:
        peak_kb = max(peak_kb, high_water_kb(process.pid))
        time.sleep(0.1)
    seconds = time.monotonic() - started
    reader.join()
    output = b"".join(chunks).decode(errors="replace")
    if process.returncode:
        raise RuntimeError(f"rebuild of {model.alias} exited {process.returncode}: {output[-2000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"(\d+) event\(s\) applied", output)
    if found is None:
        raise RuntimeError(f"rebuild of {model.alias} did not say how many events it applied: {output[-2000:]}")
    count = int(found.group(1))
    return {
        "projection": model.alias,
        "events": count,
        "seconds": round(seconds, 2),
        "events_per_s": round(count / seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        # Well under the wall time: the rebuild waits on PostgreSQL's round trips, not on its own CPU.
        "cpu_s": round(usage.ru_utime + usage.ru_stime - cpu_before, 2),
    }


def high_water_kb(pid: int) -> int:
    """VmHWM of a running process (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmHWM:\s+(\d+) kB", status)
    return int(found.group(1)) if found else 0


def ucart(database_url: str, keys_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "UCART_KEYS_DIR": str(keys_dir), "COLUMNS": "160"}
    return subprocess.run(
        [sys.executable, "-m", "infra", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=3600
    )
