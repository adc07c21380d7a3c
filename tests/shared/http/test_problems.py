"""Which failures answer 503 (a dependency is unreachable) and which 500 (a bug): only a connection
error of a client, or an OSError or TimeoutError raised inside one, is an outage."""

import asyncpg
from fastapi import FastAPI
from fastapi.testclient import TestClient

from shared.http import problems


def _app() -> FastAPI:
    app = FastAPI()
    problems.install(app)

    @app.get("/database-gone")
    async def database_gone() -> None:
        # A real client failing for real: no server behind this socket directory.
        await asyncpg.connect("postgresql://nobody@/nothing?host=/nonexistent-socket-dir", timeout=1)

    @app.get("/our-bug")
    async def our_bug() -> None:
        open("/nonexistent-dir/settings.toml").close()  # an OSError of our own making

    @app.get("/our-timeout")
    async def our_timeout() -> None:
        raise TimeoutError("a deadline in our own code")

    return app


def test_a_database_that_cannot_be_reached_is_a_503_to_retry():
    answer = TestClient(_app(), raise_server_exceptions=False).get("/database-gone")
    assert answer.status_code == 503
    assert answer.json()["retryable"] is True
    assert answer.headers["content-type"] == "application/problem+json"


def test_an_os_error_or_timeout_of_our_own_code_is_a_500_not_an_outage():
    client = TestClient(_app(), raise_server_exceptions=False)
    for path in ("/our-bug", "/our-timeout"):
        answer = client.get(path)
        assert answer.status_code == 500, path
        assert "retryable" not in answer.json()
        assert answer.headers["content-type"] == "application/problem+json"
