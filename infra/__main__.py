from infra.cli import app

app()
