"""`make demo`: start everything on embedded defaults, seed the demo cohort, print where to look."""

from __future__ import annotations

import json
import signal
import threading

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from infra import identities, kafka, seed
from infra.embedded import EmbeddedKafka
from infra.issuer import Issuer
from infra.stack import Stack
from shared.config import Settings
from shared.contract.topics import SOURCES
from shared.protocol import load_protocol
from shared.redact import mask_url

console = Console()


def run(settings: Settings | None = None) -> None:
    settings = settings or Settings()
    if not settings.study_admins:  # the first admin, who may grant the rest
        settings = settings.model_copy(update={"study_admins": (identities.STUDY_ADMIN,)})
    stack = Stack(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with console.status("Starting PostgreSQL and the Kafka-protocol broker..."):
            stack.start_infrastructure()
        if notice := broker_notice(stack, chosen=settings.broker == "tansu"):
            console.print(notice, highlight=False)
        people = identities.demo_people(tuple(load_protocol(settings.protocol_file).sites))
        with console.status("Preparing the local issuer and the demo users' grants..."):
            issuer = identities.prepare(settings, stack.database_url, people, reason="demo set-up")
        with console.status("Starting the issuer and the enrollment, treatment and follow-up services..."):
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
            seeded, skipped = seed.seed(
                settings,
                issuer.token(identities.SEEDER),
                progress=lambda s: progress.update(task, advance=1, subject=s),
            )
        console.print(
            f"Seeded {seeded} subjects" + (f" ({skipped} already there, kept as they were)" if skipped else "")
        )
        # From here Ctrl-C only asks to stop: one that comes while the tokens are printed must not be lost
        # (a KeyboardInterrupt raised inside a library's printing or signing may be swallowed there).
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        print_where_to_look(settings, stack)
        print_how_to_log_in(settings, issuer, people)
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("Stopping..."):
            stack.stop()
        console.print("Stopped. Data kept in " + str(stack.data_dir))


def broker_notice(stack: Stack, chosen: bool) -> str | None:
    """What the demo says when the embedded broker is Tansu: it keeps nothing across a restart."""
    if not isinstance(stack.kafka, EmbeddedKafka):
        return None
    if chosen:
        why = "UCART_BROKER=tansu"
    elif (kafka.java_major() or 0) < kafka.JAVA_MAJOR:
        why = f"Apache Kafka needs Java {kafka.JAVA_MAJOR}+: {kafka.missing()}"
    else:
        why = "the Apache Kafka jars are not installed: `python -m infra install-kafka` (needs Maven, once)"
    return (
        f"[yellow]Notice:[/yellow] the broker is Tansu, memory only ({why}). A broker restart loses every topic "
        "and its history; the projections stay whole (they catch up from the event stores)."
    )


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
    table.add_row(
        "Service keys (Ed25519: private, and the public ones to verify)", str(settings.signing_keys_dir.resolve())
    )
    console.print(table)
    console.print("Press Ctrl-C to stop (data is kept; run again to continue).")


def print_how_to_log_in(settings: Settings, issuer: Issuer, people: list[identities.Person]) -> None:
    """A token per demo user (12 hours), ready for `Authorization: Bearer ...`; also in a file."""
    tokens = {
        identities.STUDY_ADMIN: (
            "study admin: grants roles (POST /access/grants)",
            issuer.token(identities.STUDY_ADMIN),
        )
    }
    for person in people:
        if person.user_id not in tokens:
            tokens[person.user_id] = (person.who, issuer.token(person.user_id))
    token_file = settings.data_dir.resolve() / "issuer" / "demo-tokens.json"
    token_file.write_text(json.dumps({user: token for user, (_, token) in tokens.items()}, indent=2))
    token_file.chmod(0o600)
    console.print("[bold]Log in[/bold]: send a token as `Authorization: Bearer <token>`. One per demo user (12 hours):")
    for user, (who, token) in tokens.items():
        console.print(f"[bold]{user}[/bold] ({who})", highlight=False)
        console.print(token, soft_wrap=True, highlight=False)
    console.print(f"\nThe same tokens, by user, in {token_file}. For example:", highlight=False)
    console.print(
        f"  TOKEN=$(python3 -c \"import json; print(json.load(open('{token_file}'))['coordinator-01'])\")\n"
        f'  curl -H "Authorization: Bearer $TOKEN" {settings.url("followup")}/subjects',
        soft_wrap=True,
        highlight=False,
    )
    console.print("Another user or role: .venv/bin/ucart token --user U --role R --site S", highlight=False)
    print_dashboard_log_in(settings, issuer, people)


def print_dashboard_log_in(settings: Settings, issuer: Issuer, people: list[identities.Person]) -> None:
    """Where the dashboard is, and each demo user's password to log in to it (kept: the same every run)."""
    passwords = identities.demo_passwords(issuer)
    table = Table()
    table.add_column("User", no_wrap=True)
    table.add_column("Role")
    table.add_column("Password", no_wrap=True)  # whole, to be copied
    for user in dict.fromkeys(person.user_id for person in people):
        if user in passwords:
            who = next(person.who for person in people if person.user_id == user)
            table.add_row(user, who, passwords[user])
    console.print(
        f"\n[bold]The dashboard[/bold]: {settings.url('followup')}/ (log in with a user and its password)",
        soft_wrap=True,
        highlight=False,
    )
    console.print(table)
    console.print(
        f"The same passwords, by user, in {issuer.directory.resolve() / identities.DEMO_PASSWORDS}.",
        soft_wrap=True,
        highlight=False,
    )
