"""Headless Chromium (Debian's package) driven by Playwright: Playwright never downloads a browser here."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright

from infra.browser import AXE
from support import ISSUER

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine's notes say: without the background-networking flags Chromium calls out at every start.
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    if not shutil.which(CHROMIUM):
        raise RuntimeError("Chromium is not installed: `make test` installs Debian's chromium package (as root)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Session:
    """A browser context logged in as one person (the session cookie the login would set), recording
    every host a page asked for; with or without JavaScript, at a desktop width unless told."""

    def __init__(
        self,
        browser: Browser,
        base_url: str,
        user_id: str | None,
        *,
        javascript: bool = True,
        width: int = 1280,
        height: int = 900,
    ):
        self.context: BrowserContext = browser.new_context(
            base_url=base_url, viewport={"width": width, "height": height}, java_script_enabled=javascript
        )
        self.hosts: set[str] = set()
        self.context.on("request", self._seen)
        if user_id is not None:
            host = urlsplit(base_url).hostname or "127.0.0.1"
            self.context.add_cookies(
                [{"name": "ucart_session", "value": ISSUER.token(user_id), "domain": host, "path": "/"}]
            )

    def _seen(self, request: Request) -> None:
        self.hosts.add(urlsplit(request.url).hostname or request.url)

    def close(self) -> None:
        self.context.close()


@contextmanager
def sessions(browser: Browser, base_url: str) -> Iterator[Callable[[str | None], Session]]:
    """Opens sessions as people (`open_as(user_id)`); at the end, checks that no page asked a host but
    127.0.0.1, and closes them."""
    opened: list[Session] = []

    def open_as(user_id: str | None) -> Session:
        session = Session(browser, base_url, user_id)
        opened.append(session)
        return session

    yield open_as
    for session in opened:
        assert session.hosts <= {"127.0.0.1"}, f"a page asked another host: {session.hosts}"
        session.close()


def serious_violations(page: Page) -> list[dict[str, object]]:
    """What axe-core (the npm package, injected from the project's cache) finds serious or critical."""
    if not AXE.exists():
        raise RuntimeError("axe-core is not installed: `make test` installs it (python -m infra install-browser)")
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, object]] = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
            .filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({id: v.id, impact: v.impact, help: v.help, where: v.nodes.map(n => n.target.join(" "))}))"""
    )
    return found
