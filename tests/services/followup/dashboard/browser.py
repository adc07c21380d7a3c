"""Headless Chromium (Debian's package) driven by Playwright: Playwright never downloads a browser here."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Request, sync_playwright

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
    every host a page asked for."""

    def __init__(self, browser: Browser, base_url: str, user_id: str | None):
        self.context: BrowserContext = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
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
