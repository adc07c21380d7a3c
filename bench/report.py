"""The machine a run was made on, the results table, and the JSON under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import infra.kafka

RESULTS = Path(__file__).resolve().parent / "results"


def machine(postgres_version: str, broker: str) -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        model = found.group(1).strip() if found else ""
    pom = Path(infra.kafka.__file__).with_name("pom.xml").read_text()
    kafka = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "postgresql": postgres_version,
        "broker": f"Apache Kafka {kafka.group(1) if kafka else '?'}" if broker == "kafka" else "Tansu (memory only)",
        "os": platform.platform(),
    }


def ratio(value: float | None, baseline: float | None) -> float | None:
    if not value or not baseline:
        return None
    return round(value / baseline, 3)


def write(results: dict[str, Any], final: bool = True) -> Path:
    """latest.json, and when the run is over a copy named by the time it started."""
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results | {"complete": final}, indent=2, default=str) + "\n"
    latest = RESULTS / "latest.json"
    latest.write_text(text)
    if not final:
        return latest
    stamp = datetime.fromisoformat(results["started_at"]).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"{stamp}.json"
    path.write_text(text)
    return path


def rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(workload, figure, baseline, ratio, target) for the table."""
    out = []
    for row in results.get("figures", []):
        out.append(
            (
                row["workload"],
                row["figure"],
                row.get("baseline", ""),
                "" if row.get("ratio") is None else f"{row['ratio']:.3f}x",
                row.get("target", ""),
            )
        )
    return out


def table(results: dict[str, Any], console: Console) -> None:
    view = Table(title=f"make bench ({results['mode']}), {results['started_at']}")
    for column in ("workload", "figure", "baseline (same run)", "ratio", "target"):
        view.add_column(column)
    for row in rows(results):
        view.add_row(*row)
    console.print(view)


def markdown(results: dict[str, Any]) -> str:
    """The table as docs/performance.md shows it: `python -m bench.report [results.json]`."""
    lines = ["| Workload | Figure | Baseline (same run) | Ratio | Target |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    source = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "latest.json"
    print(markdown(json.loads(source.read_text())))
