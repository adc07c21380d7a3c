"""`python -m bench` (`make bench`): start a stack of its own, run every workload beside its raw
baseline, print the table and write bench/results/latest.json (and a timestamped copy)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import baselines, cohort, commands, pipeline, report
from bench.report import ratio
from bench.stack import Servers
from services import registry
from shared import db

T = TypeVar("T")
console = Console(width=None if Console().is_terminal else 160)  # a log file gets whole rows


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every workload at small sizes (well under 2 minutes)")
    parser.add_argument("--events", help="store sizes the rebuild runs at, e.g. 100000,1000000")
    parser.add_argument("--backlog", type=int, help="events the relay publishes and the journey catches up on")
    parser.add_argument("--seconds", type=float, help="how long each closed-loop HTTP workload runs")
    parser.add_argument("--rates", help="open-loop rates of the POST -> journey workload, e.g. 10,50,100")
    parser.add_argument("--skip", default="", help="workloads to leave out: commands, pipeline, relay")
    args = parser.parse_args(argv)
    full = {"events": "100000,1000000", "backlog": 100_000, "seconds": 20.0, "rates": "10,50,100"}
    quick = {"events": "500", "backlog": 500, "seconds": 2.0, "rates": "10,50,100"}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.sizes = [int(n) for n in args.events.split(",")]
    args.rate_list = [float(r) for r in args.rates.split(",")]
    args.kafka_messages = 5_000 if args.quick else 100_000
    args.baseline_seconds = 2.0 if args.quick else 10.0
    args.latency_seconds = 2.0 if args.quick else 20.0
    return args


class Run:
    """One bench run: its progress display, and the results it gathers."""

    def __init__(self, args: argparse.Namespace, servers: Servers):
        self.args, self.servers = args, servers
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.results: dict[str, Any] = {
            "mode": "quick" if args.quick else "full",
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "arguments": {k: v for k, v in vars(args).items() if k not in ("sizes", "rate_list")},
            "raw": {},
            "figures": [],
            "errors": [],
        }

    @contextmanager
    def step(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(description, total=total)
        try:
            yield lambda n: self.progress.advance(task, n)
        finally:
            self.progress.update(task, total=self.progress.tasks[task].completed)  # shown as done

    def figure(
        self, workload: str, figure: str, baseline: str = "", value_ratio: float | None = None, target: str = ""
    ) -> None:
        self.results["figures"].append(
            {"workload": workload, "figure": figure, "baseline": baseline, "ratio": value_ratio, "target": target}
        )

    def guarded(self, name: str, work: Callable[[], None]) -> None:
        """A workload that fails is reported, and the others still run."""
        try:
            work()
        except Exception as exc:
            self.results["errors"].append(f"{name}: {type(exc).__name__}: {exc}")
            console.print(f"[red]{name} failed:[/red] {exc}")
            console.print(traceback.format_exc(), markup=False, highlight=False)
        report.write(self.results, final=False)  # a long run stopped half-way keeps what it measured


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def postgres_baselines(run_: Run) -> None:
    url = run_.servers.database("baseline")
    raw = run_.results["raw"]
    for connections in (1, 16):
        with run_.step(f"asyncpg insert+commit, {connections} connection(s)") as advance:
            raw[f"pg_commit_rows_per_s_{connections}"] = round(
                run(baselines.commit_rate(url, connections, run_.args.baseline_seconds, advance)), 1
            )


def kafka_baselines(run_: Run, size: int) -> None:
    messages = run_.args.kafka_messages
    with run_.step(f"aiokafka produce then consume, {messages} x {size} B", total=2 * messages) as advance:
        produced, consumed = run(baselines.kafka_rates(run_.servers.bootstrap, messages, size, advance))
    with run_.step(f"Ed25519 signature checks, {size} B") as advance:
        verified = baselines.signature_checks(size, run_.args.baseline_seconds / 2, advance)
    run_.results["raw"] |= {
        "kafka_produce_msgs_per_s": round(produced, 1),
        "kafka_consume_msgs_per_s": round(consumed, 1),
        "kafka_message_bytes": size,
        "ed25519_verify_per_s": round(verified, 1),
    }


def command_workloads(run_: Run) -> None:
    args, raw = run_.args, run_.results["raw"]
    deployment = run_.servers.deployment("commands")
    with console.status("Starting the three services for the HTTP workloads..."):
        deployment.start()
    token = run_.servers.token()
    try:
        for clients in (1, 16):
            base = raw.get(f"pg_commit_rows_per_s_{clients}")
            with run_.step(f"enrolment, {clients} client(s), {args.seconds:g} s") as advance:
                tally = run(commands.enrolments(deployment, token, clients, args.seconds, advance))
            summary = raw[f"enrolment_{clients}"] = tally.summary()
            run_.figure(
                f"enrolment, {clients} client(s)",
                f"{summary['commands_per_s']} cmd/s, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms",
                f"{base} commits/s ({clients} conn)",
                ratio(summary["commands_per_s"], base),
                ">= 0.25x",
            )
        for clients in (1, 16):
            base = raw.get(f"pg_commit_rows_per_s_{clients}")
            with run_.step(f"mixed journeys, {clients} client(s), {args.seconds:g} s") as advance:
                tally = run(commands.mixed(deployment, token, clients, args.seconds, advance))
            summary = raw[f"mixed_{clients}"] = tally.summary()
            run_.figure(
                f"mixed journeys, {clients} client(s)",
                f"{summary['commands_per_s']} cmd/s, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
                f"retries {summary['retries']} ({summary['retries_pct']} %)",
                f"{base} commits/s ({clients} conn)",
                ratio(summary["commands_per_s"], base),
                ">= 0.25x" + (", retries < 5 %" if clients == 16 else ""),
            )
        for rate in args.rate_list:
            total = int(rate * args.latency_seconds)
            with run_.step(f"POST -> journey at {rate:g} cmd/s", total=total) as advance:
                latency = run(commands.post_to_journey(deployment, token, rate, args.latency_seconds, advance))
            summary = raw[f"post_to_journey_{rate:g}"] = latency.summary()
            run_.figure(
                f"POST -> journey, {rate:g} cmd/s",
                f"p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms ({summary['shown']}/{summary['sent']} shown)",
                f"command itself: p50 {summary['command_p50_ms']} ms, p99 {summary['command_p99_ms']} ms",
                None,
                "p99 < 100 ms at 50/s" if rate == 50 else "",
            )
    finally:
        with console.status("Stopping the services..."):
            deployment.stop()


def fill(run_: Run, size: int) -> tuple[str, int]:
    """A new database whose stores hold at least `size` events (whole subjects); its URL and the count."""
    url = run_.servers.database(f"store{size}")
    cohort.prepare_database(url)
    with run_.step(f"bulk-generating {size} events into the stores", total=size) as advance:
        started = time.monotonic()
        written = run(cohort.write(url, size, progress=advance))
    written["seconds"] = round(time.monotonic() - started, 2)
    run_.results["raw"][f"generated_{size}"] = written
    return url, written["events"]


def relay_and_catch_up(run_: Run, url: str, events: int) -> None:
    raw = run_.results["raw"]
    # Reconciliation from the stores only at start (and that pass finds nothing): Kafka is measured.
    deployment = run_.servers.deployment("backlog", database_url=url, reconcile_seconds=3600.0)
    timeout = max(600.0, events / 20)
    try:
        with run_.step(f"relay publishing {events} events", total=events) as advance:
            relayed = raw["relay"] = run(pipeline.relay(deployment, events, advance, timeout))
        base = raw.get("kafka_produce_msgs_per_s")
        run_.figure(
            f"relay, {events} events",
            f"{relayed['events_per_s']} events/s",
            f"{base} msgs/s produced (aiokafka)",
            ratio(relayed["events_per_s"], base),
        )
        # Only the follow-up service (the journey's) runs from here: the others' consumers would compete.
        deployment.stop(("enrollment", "treatment"))
        with run_.step(f"journey catching up from a backlog of {events}", total=events) as advance:
            caught = raw["catch_up"] = run(pipeline.catch_up(deployment, events, advance, timeout))
        base = raw.get("kafka_consume_msgs_per_s")
        run_.figure(
            f"journey catch-up from Kafka, {events} events",
            f"{caught['events_per_s']} events/s",
            f"{base} msgs/s consumed (aiokafka); {raw.get('ed25519_verify_per_s')} signature checks/s",
            ratio(caught["events_per_s"], base),
            ">= 10,000 events/s",
        )
    finally:
        with console.status("Stopping the services..."):
            deployment.stop()


def rebuilds(run_: Run, url: str, size: int) -> None:
    raw = run_.results["raw"]
    with run_.step(f"asyncpg read of the stores, {size} events", total=size) as advance:
        _, read = run(baselines.read_rate(url, advance))
    raw[f"pg_read_rows_per_s_{size}"] = round(read, 1)
    results = raw[f"rebuild_{size}"] = []
    for model in registry.READ_MODELS:
        total = run(pipeline.stored(url, model.sources))
        with console.status(f"Rebuilding {model.alias} from {total} events in a child process..."):
            result = pipeline.rebuild(url, model, run_.servers.keys_dir)
        results.append(result)
        run_.figure(
            f"rebuild {model.alias}, {size} in the stores",
            f"{result['events_per_s']} events/s ({result['events']} events), peak RSS {result['peak_rss_mb']} MB",
            f"{round(read, 1)} rows/s read (asyncpg)",
            ratio(result["events_per_s"], read),
            ">= 0.25x, RSS < 300 MB" if model.alias == "journey" else "",
        )
        if result["events"] != total:
            run_.results["errors"].append(f"rebuild {model.alias}: applied {result['events']} of {total} events")


def check_accepted(run_: Run, url: str) -> None:
    """What the generator wrote passes `ucart verify`, and nothing was parked."""
    verified = pipeline.ucart(url, run_.servers.keys_dir, "verify")
    parked = pipeline.ucart(url, run_.servers.keys_dir, "parked", "list")
    summary = parked.stdout.strip().splitlines()[-1] if parked.stdout.strip() else parked.stderr[-300:]
    run_.results["raw"]["generated_accepted"] = {"verify_exit": verified.returncode, "parked": summary}
    if verified.returncode != 0:
        run_.results["errors"].append(f"ucart verify failed on the generated stores: {verified.stdout[-1000:]}")
    if not summary.startswith("0 parked"):
        run_.results["errors"].append(f"events parked on the generated stores: {summary}")


def main(argv: list[str] | None = None) -> int:
    args = arguments(argv)
    signal.signal(signal.SIGTERM, _interrupted)  # stop the servers on the way out, as Ctrl-C does
    servers = Servers()
    with console.status("Starting PostgreSQL and the broker..."):
        servers.start()
    run_ = Run(args, servers)
    try:
        version = run(_postgres_version(servers.server_url))
        run_.results["machine"] = report.machine(version, servers.broker_kind)
        with run_.progress:
            run_.guarded("PostgreSQL baselines", lambda: postgres_baselines(run_))
            run_.guarded("Kafka baselines", lambda: kafka_baselines(run_, cohort.envelope_size()))
            if "commands" not in args.skip:
                run_.guarded("HTTP workloads", lambda: command_workloads(run_))
            if "pipeline" not in args.skip:
                backlog, events = fill(run_, args.backlog)
                run_.guarded("accepted by ucart", lambda: check_accepted(run_, backlog))
                if "relay" not in args.skip:
                    run_.guarded("relay and catch-up", lambda: relay_and_catch_up(run_, backlog, events))
                for size in args.sizes:
                    url = backlog if size == args.backlog else fill(run_, size)[0]
                    run_.guarded(f"rebuild at {size}", partial(rebuilds, run_, url, size))
    finally:
        with console.status("Stopping PostgreSQL and the broker..."):
            servers.stop()
    run_.results["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report.table(run_.results, console)
    path = report.write(run_.results)
    for error in run_.results["errors"]:
        console.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
    console.print(f"Results in {path} and {path.with_name('latest.json')}")
    return 1 if run_.results["errors"] else 0


def _interrupted(*_: object) -> None:
    raise KeyboardInterrupt


async def _postgres_version(url: str) -> str:
    conn = await db.connect(url)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
