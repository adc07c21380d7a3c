"""Logging in to the dashboard in Chromium, through the local issuer served over HTTP: the
authorization-code flow with PKCE, a wrong password refused, the session kept, logging out."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import expect

from infra.embedded import free_port
from infra.issuer import DASHBOARD_CLIENT, Issuer, app
from support import RunningStack
from tests.services.followup.dashboard.browser import chromium


@pytest.fixture(scope="module")
def issued(servers, tmp_path_factory) -> Iterator[tuple[RunningStack, Issuer]]:
    """A stack whose issuer is a local issuer served over HTTP (the other tests' issuer is not served)."""
    from conftest import drop_database, new_database

    url, port = new_database(servers[0]), free_port()
    issuer_url = f"http://127.0.0.1:{port}"
    directory = tmp_path_factory.mktemp("issuer")
    logs, keys = tmp_path_factory.mktemp("logs"), tmp_path_factory.mktemp("keys")
    stack = RunningStack(
        url,
        servers[1],
        f"l{uuid.uuid4().hex[:8]}.",
        logs,
        keys_dir=keys,
        oidc_issuer=issuer_url,
        oidc_jwks=str(Path(directory) / "jwks.json"),
    )
    issuer = Issuer(
        directory, issuer_url, "ucart", redirect_uris={DASHBOARD_CLIENT: (stack.url("followup", "/auth/callback"),)}
    )
    server = uvicorn.Server(uvicorn.Config(app(issuer), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with stack:
            yield stack, issuer
    finally:
        server.should_exit = True
        thread.join(10)
        drop_database(servers[0], url)


def test_a_coordinator_logs_in_with_pkce_sees_their_pages_and_logs_out(issued):
    stack, issuer = issued
    password = issuer.register_user("coordinator-01")
    with chromium() as browser:
        context = browser.new_context(base_url=stack.url("followup", ""))
        page = context.new_page()
        page.goto("/dashboard/subjects")
        # Sent to the issuer's login page (its form, on the issuer's own address).
        expect(page.get_by_label("Password")).to_be_visible()
        assert page.url.startswith(f"{issuer.url}/authorize?") and "code_challenge_method=S256" in page.url
        page.get_by_label("User").fill("coordinator-01")
        page.get_by_label("Password").fill("not the password")
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_text("wrong", exact=False).first).to_be_visible()
        page.get_by_label("User").fill("coordinator-01")
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        # Back where the person was going, logged in; the token sits in an HttpOnly cookie.
        expect(page).to_have_url(stack.url("followup", "/dashboard/subjects"))
        expect(page.get_by_text("Logged in as")).to_contain_text("coordinator-01")
        [session] = [c for c in context.cookies() if c["name"] == "ucart_session"]
        assert session["httpOnly"] and session["sameSite"] == "Lax"
        assert page.evaluate("document.cookie").find("ucart_session") == -1  # scripts cannot read it
        page.get_by_role("button", name="Log out").click()
        expect(page.get_by_role("heading", name="Logged out")).to_be_visible()
        assert not [c for c in context.cookies() if c["name"] == "ucart_session"]
        page.goto("/dashboard/subjects")
        expect(page.get_by_label("Password")).to_be_visible()  # asked to log in again
        context.close()
