"""The browser the dashboard's tests drive: Debian's `chromium` package, installed once by `make test`
where it is missing (as root, with apt-get). Playwright drives it; it never downloads a browser."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

PACKAGE = "chromium"


def found() -> str | None:
    return shutil.which("chromium")


def install(say: Callable[[str], None]) -> None:
    """Install Debian's Chromium unless it is there; RuntimeError saying what to do where it cannot."""
    if found():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise RuntimeError(
            "Chromium is missing: install Debian's `chromium` package (apt-get install chromium, as root); "
            "the dashboard's browser tests need it"
        )
    say("Installing Debian's chromium package for the dashboard's browser tests (once)...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", PACKAGE]):
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    if not found():
        raise RuntimeError("apt-get installed chromium, but no `chromium` command is on the PATH")
