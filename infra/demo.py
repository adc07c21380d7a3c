"""`make demo`: start everything on embedded defaults, seed the demo cohort, print where to look."""

from __future__ import annotations

import signal
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from infra import seed
from infra.stack import Stack
from shared.config import Settings
from shared.contract.topics import SOURCES
from shared.redact import mask_url
from shared.signing import ensure_keys

console = Console()


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    stack = Stack(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status("Starting PostgreSQL and the Kafka-protocol broker..."):
            stack.start_infrastructure()
        ensure_keys(settings.signing_keys_dir, SOURCES)
        with console.status("Starting the enrollment, treatment and follow-up services..."):
            stack.start_services()
        cohort = seed.cohort()
        with Progress(
            TextColumn("Seeding the demo cohort"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[subject]}"),
            console=console,
        ) as progress:
            task = progress.add_task("seed", total=len(cohort), subject="")
            seeded, skipped = seed.seed(settings, progress=lambda s: progress.update(task, advance=1, subject=s))
        console.print(
            f"Seeded {seeded} subjects" + (f" ({skipped} already there, kept as they were)" if skipped else "")
        )
        print_where_to_look(settings, stack)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("Stopping..."):
            stack.stop()
        console.print("Stopped. Data kept in " + str(stack.data_dir))


def print_where_to_look(settings: Settings, stack: Stack) -> None:
    table = Table(title="UCAR-T patient journey is running", show_lines=False)
    table.add_column("What")
    table.add_column("Where")
    followup = settings.url("followup")
    table.add_row("Subjects and their status", f"{followup}/subjects")
    table.add_row("A subject's journey", f"{followup}/subjects/UCT-01-003/journey")
    table.add_row("A subject's follow-up schedule", f"{followup}/subjects/UCT-02-005/schedule")
    table.add_row("Overdue visits across the study", f"{followup}/followups?status=overdue")
    table.add_row("Open data queries", f"{followup}/queries?status=open")
    table.add_row("Expedited safety reports", f"{followup}/safety-reports")
    table.add_row("Safety table", f"{followup}/study/safety")
    table.add_row("Efficacy table (ORR, Kaplan-Meier)", f"{followup}/study/efficacy")
    for name in SOURCES:
        table.add_row(f"{name} API (OpenAPI)", f"{settings.url(name)}/docs")
    table.add_row("Kafka bootstrap", mask_url(stack.bootstrap_servers))
    table.add_row("PostgreSQL", mask_url(stack.database_url))  # a configured password never shows
    table.add_row("Logs", str(stack.log_dir))
    console.print(table)
    console.print("Press Ctrl-C to stop (data is kept; run again to continue).")
