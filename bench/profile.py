"""`python -m bench.profile`: where the time goes on the command path and in the journey rebuild.

Samples with py-spy (in the dev dependencies' place: the venv): the enrollment service while one client
enrols subjects, and `ucart rebuild --projection journey` over a generated store. Prints, for each, the
frames that hold the largest share of the samples (inclusive and own), and keeps the collapsed stacks
(flame graph input) under bench/results/profiles/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import cohort, commands
from bench.report import RESULTS
from bench.stack import Servers

console = Console()
PROFILES = RESULTS / "profiles"
ROOT = Path(__file__).resolve().parent.parent


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is not installed: .venv/bin/python -m pip install py-spy")
    return found


def frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rpartition(" ")
    # "function (path:line)" -> "function (file)": lines of one function count together.
    names = [re.sub(r" \((?:.*/)?([^/:]+):\d+\)", r" (\1)", f) for f in stack.split(";")]
    return names, int(count)


def summary(collapsed: Path, title: str, top: int = 30) -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        if not line.strip():
            continue
        names, count = frames(line)
        total += count
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    for kind, counter in (("inclusive", inclusive), ("own", own)):
        table = Table(title=f"{title}: {kind} share of {total} samples")
        table.add_column("%", justify="right")
        table.add_column("frame")
        for name, count in counter.most_common(top):
            table.add_row(f"{100 * count / total:.1f}", name)
        console.print(table)


def record(
    pid_or_command: int | list[str], out: Path, seconds: float | None = None, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    args = [py_spy(), "record", "--format", "raw", "--rate", "200", "--output", str(out), "--nonblocking"]
    if seconds is not None:
        args += ["--duration", str(int(seconds))]
    if isinstance(pid_or_command, int):
        args += ["--pid", str(pid_or_command)]
    else:
        args += ["--", *pid_or_command]
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def command_path(servers: Servers, seconds: float) -> Path:
    deployment = servers.deployment("profile")
    deployment.start()
    out = PROFILES / "enrolment-1-client.txt"
    try:
        process = deployment.group["enrollment"].process
        assert process is not None
        sampler = record(process.pid, out, seconds)
        tally = asyncio.run(commands.enrolments(deployment, servers.token(), 1, seconds, lambda _: None))
        sampler.wait()
        console.print(f"{len(tally.latencies)} enrolments sampled, {tally.summary()['commands_per_s']} cmd/s")
    finally:
        deployment.stop()
    return out


def rebuild(servers: Servers, events: int) -> Path:
    url = servers.database("profile_store")
    cohort.prepare_database(url)
    asyncio.run(cohort.write(url, events))
    out = PROFILES / f"rebuild-journey-{events}.txt"
    env = {**os.environ, "DATABASE_URL": url, "UCART_KEYS_DIR": str(servers.keys_dir)}
    record([sys.executable, "-m", "infra", "rebuild", "--projection", "journey"], out, env=env).wait()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the command path is sampled")
    parser.add_argument("--events", type=int, default=5000, help="events in the store the journey is rebuilt from")
    args = parser.parse_args()
    PROFILES.mkdir(parents=True, exist_ok=True)
    servers = Servers()
    servers.start()
    try:
        paths = [command_path(servers, args.seconds), rebuild(servers, args.events)]
    finally:
        servers.stop()
    for path in paths:
        summary(path, path.stem)


if __name__ == "__main__":
    main()
