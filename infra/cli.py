"""`python -m infra <command>` (also installed as `ucart`)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from services.registry import READ_MODELS

if TYPE_CHECKING:
    from shared.config import Settings

app = typer.Typer(
    help="UCAR-T patient journey: run the demo, generate the docs, audit and rebuild.", no_args_is_help=True
)


# `--projection` takes the name of any read model the services keep.
ProjectionName = Enum("ProjectionName", {m.alias: m.alias for m in READ_MODELS}, type=str)  # type: ignore[misc]  # built from data
JOURNEY = ProjectionName("journey")


@app.command()
def demo() -> None:
    """Start PostgreSQL, the broker and the three services; seed the demo cohort; Ctrl-C stops."""
    from infra import demo as demo_module

    demo_module.run(_settings())


@app.command()
def docs() -> None:
    """Write docs/events/*.json (JSON Schema per event) and docs/asyncapi/*.json."""
    from infra import docs as docs_module

    for path in docs_module.write():
        typer.echo(f"wrote {path}")


@app.command("install-kafka")
def install_kafka(
    skip_missing: bool = typer.Option(
        False, "--skip-missing", help="Where Java 17+ or Maven is missing, say so and exit 0 (as `make` does)."
    ),
) -> None:
    """Fetch the Apache Kafka jars with Maven into .cache/ (once; a second run does nothing)."""
    from infra import kafka

    if not kafka.installed() and (why := kafka.missing()):
        typer.echo(f"Apache Kafka not installed: {why}. The embedded broker will be Tansu (memory only).", err=True)
        raise typer.Exit(0 if skip_missing else 1)
    try:
        kafka.install(typer.echo)
    except RuntimeError as failed:
        typer.echo(str(failed), err=True)
        raise typer.Exit(1) from None


@app.command("install-browser")
def install_browser() -> None:
    """Install what the dashboard's browser tests need where it is missing: Chromium, axe-core (once)."""
    from infra import browser

    try:
        browser.install(typer.echo)
    except RuntimeError as failed:
        typer.echo(str(failed), err=True)
        raise typer.Exit(1) from None


def _settings() -> Settings:
    """The settings, refused at once (with what to set) if the TLS or SASL ones cannot work."""
    from shared import transport
    from shared.config import Settings

    settings = Settings()
    try:
        transport.check(settings)
    except transport.TransportError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


@app.command()
def token(
    user: Annotated[str, typer.Option(help="The token's subject: who the person is.")],
    role: Annotated[str | None, typer.Option(help="Grant this role first (if not yet held), e.g. coordinator.")] = None,
    site: Annotated[list[str] | None, typer.Option(help="A site of the grant; repeat for more; default: all.")] = None,
    hours: Annotated[int, typer.Option(min=1, max=24 * 30, help="How long the token is valid.")] = 12,
) -> None:
    """Print an access token of the local issuer for USER (granting ROLE at SITE first, recorded as an
    event with the reason "granted with ucart token")."""
    from infra import identities, tools
    from infra.issuer import Issuer
    from shared.errors import DomainError

    settings = _settings()
    if role is not None:
        person = identities.Person(user, role, tuple(site or ["*"]), role)
        try:
            with tools.database(settings) as url:
                identities.prepare(settings, url, [person], reason="granted with ucart token")
        except DomainError as refused:
            typer.echo(refused.detail, err=True)
            raise typer.Exit(2) from None
    typer.echo(Issuer.of(settings).token(user, seconds=hours * 3600))


Keys = Annotated[
    Path | None, typer.Option(help="The public keys (`<key id>.pub`); default: the keys directory (UCART_KEYS_DIR).")
]


@app.command()
def verify(
    checkpoints: Annotated[
        Path | None,
        typer.Option(
            help="Also check the stores against the signed checkpoints in this file, or directory of *.jsonl."
        ),
    ] = None,
    checkpoints_from_topic: bool = typer.Option(
        False, "--checkpoints-from-topic", help="Also check them against the services' checkpoint topics."
    ),
    keys: Keys = None,
) -> None:
    """Check the hash chains of every event store; name each event changed outside the application. With
    checkpoints, also catch a history rewritten with its chain: an edited event, a removed tail or stream."""
    from infra import tools

    raise typer.Exit(0 if tools.verify(_settings(), checkpoints, checkpoints_from_topic, keys) else 1)


@app.command("verify-export")
def verify_export(
    export: Annotated[Path, typer.Argument(help="A subject's audit export (GET /subjects/{id}/history?format=audit).")],
    checkpoints: Annotated[Path, typer.Option(help="The signed checkpoints: a file, or a directory of *.jsonl.")],
    keys: Keys = None,
) -> None:
    """Check a subject's audit export with only the public keys and the checkpoints (no database): each
    stream whole, each event its stored row, the chains recomputed and matching what the services signed."""
    from infra import tools

    raise typer.Exit(0 if tools.verify_export(export, checkpoints, keys or _settings().signing_keys_dir) else 1)


@app.command()
def rebuild(projection: ProjectionName = JOURNEY) -> None:
    """Rebuild a live projection from the event stores (the services may keep running)."""
    from infra import tools

    tools.rebuild(_settings(), projection.value)


@app.command()
def compare(
    projection: ProjectionName = JOURNEY,
    from_kafka: bool = typer.Option(False, help="Replay the topics from the earliest offset instead."),
) -> None:
    """Build a replica of a projection (from the event stores, or from Kafka) and compare it with the live one."""
    from infra import tools

    raise typer.Exit(0 if tools.compare(_settings(), projection.value, from_kafka) else 1)


parked = typer.Typer(
    help="Events a consumer could never apply: list them, retry them after a fix, dismiss them.", no_args_is_help=True
)
app.add_typer(parked, name="parked")


@parked.command("list")
def parked_list() -> None:
    """Every parked event of every service, with its id, where it came from and why it was parked."""
    from infra import tools

    tools.parked_list(_settings())


def _refs(ids: list[str], everything: bool) -> list[str] | None:
    if everything == bool(ids):
        raise typer.BadParameter("name parked events by id (as `ucart parked list` shows them), or give --all")
    return None if everything else ids


@parked.command("retry")
def parked_retry(
    ids: Annotated[list[str] | None, typer.Argument(help="Ids such as followup:12")] = None,
    everything: bool = typer.Option(False, "--all", help="Every parked event."),
) -> None:
    """Apply parked events again; exits 1 if any is still parked."""
    from infra import tools

    raise typer.Exit(0 if tools.parked_retry(_settings(), _refs(ids or [], everything)) else 1)


@parked.command("dismiss")
def parked_dismiss(
    ids: Annotated[list[str] | None, typer.Argument(help="Ids such as followup:12")] = None,
    everything: bool = typer.Option(False, "--all", help="Every parked event."),
    note: str = typer.Option(..., help="Why it will never be applied (kept with it)."),
) -> None:
    """Close parked events that must never be applied (e.g. a forged or garbled message)."""
    from infra import tools

    tools.parked_dismiss(_settings(), _refs(ids or [], everything), note)
