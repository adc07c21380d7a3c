"""`python -m infra <command>` (also installed as `ucart`)."""

from __future__ import annotations

import typer

app = typer.Typer(help="UCAR-T patient journey: run the demo, generate the docs.", no_args_is_help=True)


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
