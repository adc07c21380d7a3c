"""`python -m infra <command>` (also installed as `ucart`)."""

from __future__ import annotations

from enum import Enum

import typer

app = typer.Typer(help="UCAR-T patient journey: run the demo, generate the docs, audit and rebuild.",
                  no_args_is_help=True)


class ProjectionName(str, Enum):
    journey = "journey"
    treatment_facts = "treatment-facts"
    followup_facts = "followup-facts"
    enrollment_facts = "enrollment-facts"


@app.command()
def demo() -> None:
    """Start PostgreSQL, the broker and the three services; seed the demo cohort; Ctrl-C stops."""
    from infra import demo as demo_module

    demo_module.run()


@app.command()
def docs() -> None:
    """Write docs/events/*.json (JSON Schema per event) and docs/asyncapi/*.json."""
    from infra import docs as docs_module

    for path in docs_module.write():
        typer.echo(f"wrote {path}")


def _settings():
    from shared.config import Settings

    return Settings()


@app.command()
def verify() -> None:
    """Check the hash chains of every event store; name each event changed outside the application."""
    from infra import tools

    raise typer.Exit(0 if tools.verify(_settings()) else 1)


@app.command()
def rebuild(projection: ProjectionName = ProjectionName.journey) -> None:
    """Rebuild a live projection from the event stores (the services may keep running)."""
    from infra import tools

    tools.rebuild(_settings(), projection.value)


@app.command()
def compare(projection: ProjectionName = ProjectionName.journey,
            from_kafka: bool = typer.Option(False, help="Replay the topics from the earliest offset instead.")) -> None:
    """Build a replica of a projection (from the event stores, or from Kafka) and compare it with the live one."""
    from infra import tools

    raise typer.Exit(0 if tools.compare(_settings(), projection.value, from_kafka) else 1)
