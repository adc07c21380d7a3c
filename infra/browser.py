"""What the dashboard's browser tests need, installed once by `make test`: Debian's `chromium` package
where it is missing (as root, with apt-get), which Playwright drives (it never downloads a browser), and
the axe-core accessibility engine from the npm registry into the project's cache."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PACKAGE = "chromium"
AXE_VERSION = "4.14.1"
AXE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "npm"  # the project's own, git-ignored
AXE = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"


def found() -> str | None:
    return shutil.which("chromium")


def install(say: Callable[[str], None]) -> None:
    """Install Debian's Chromium and axe-core unless they are there; RuntimeError saying what to do
    where it cannot."""
    _install_chromium(say)
    _install_axe(say)


def _install_axe(say: Callable[[str], None]) -> None:
    if AXE.exists():
        return
    if shutil.which("npm") is None:
        raise RuntimeError("npm is missing: the accessibility checks need axe-core from the npm registry")
    say(f"Installing axe-core {AXE_VERSION} from the npm registry for the accessibility checks (once)...")
    command = ["npm", "install", "--prefix", str(AXE_DIR), "--no-audit", "--no-fund", f"axe-core@{AXE_VERSION}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not AXE.exists():
        raise RuntimeError(f"npm could not install axe-core: {done.stderr.strip()[-500:]}")


def _install_chromium(say: Callable[[str], None]) -> None:
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
