"""Workloads through the HTTP API: enrolment, the mixed journey, and POST -> journey latency."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from bench.journeys import entry, journeys
from bench.stack import Deployment
from shared import db

Advance = Callable[[int], None]
RETRY_SLEEP = 0.02  # a retryable refusal clears once Kafka delivered what the service waits for


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


@dataclass
class Tally:
    """Latencies (seconds) of the commands answered 201, and the refusals retried."""

    latencies: list[float] = field(default_factory=list)
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        done = len(self.latencies)
        return {
            "commands": done,
            "seconds": round(self.seconds, 2),
            "commands_per_s": round(done / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(percentile(self.latencies, 50) * 1000, 1),
            "p99_ms": round(percentile(self.latencies, 99) * 1000, 1),
            "retries": self.retries,
            "retries_pct": round(100 * self.retries / done, 2) if done else 0.0,
            "failures": len(self.failures),
            "first_failures": self.failures[:3],
        }


def client(token: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(timeout=30, limits=limits, headers={"Authorization": f"Bearer {token}"})


async def send(http: httpx.AsyncClient, url: str, body: dict[str, Any], tally: Tally) -> dict[str, Any] | None:
    """POST a command until it is accepted, retrying refusals marked retryable; the answer, or None."""
    started = time.monotonic()
    key = f"bench-{uuid.uuid4().hex}"  # the same for the retries of one command, as a client's would be
    while True:
        try:
            response = await http.post(url, json=body, headers={"Idempotency-Key": key})
        except httpx.TransportError as exc:  # the service dropped the connection: counted, not retried
            tally.failures.append(f"{url}: {type(exc).__name__}: {exc}")
            return None
        if response.status_code == 201:
            tally.latencies.append(time.monotonic() - started)
            answer: dict[str, Any] = response.json()
            return answer
        problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        if problem.get("retryable") and time.monotonic() - started < 60:
            tally.retries += 1
            await asyncio.sleep(RETRY_SLEEP)
            continue
        tally.failures.append(f"{url} -> {response.status_code}: {problem.get('detail', response.text[:200])}")
        return None


def enrolment_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "occurred_at": (now - timedelta(minutes=1)).isoformat(),
        "reason": None,
        "payload": {
            "site_id": "01",
            "consent_signed_on": (now - timedelta(days=2)).date().isoformat(),
            "year_of_birth": 1980,
            "sex": "F",
            "disease_status": "relapsed",
            "cd19_positive": True,
        },
    }


async def enrolments(deployment: Deployment, token: str, clients: int, seconds: float, advance: Advance) -> Tally:
    """`clients` clients, each enrolling new subjects one after the other for `seconds`."""
    tally = Tally()
    numbers = itertools.count(1)
    prefix = f"E{clients}{uuid.uuid4().hex[:4].upper()}"
    base = deployment.url("enrollment")
    deadline = time.monotonic() + seconds

    async def one_client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            url = f"{base}/subjects/{prefix}-01-{next(numbers):06d}/enrolment"
            if await send(http, url, enrolment_body(), tally):
                advance(1)

    started = time.monotonic()
    async with client(token, clients) as http:
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
    tally.seconds = time.monotonic() - started
    return tally


async def mixed(deployment: Deployment, token: str, clients: int, seconds: float, advance: Advance) -> Tally:
    """`clients` clients, each taking subjects through the demo cohort's journeys (enrolment,
    lymphodepletion, infusion, AEs, visits, responses...) for `seconds`."""
    tally = Tally()
    subjects = journeys(f"M{clients}{uuid.uuid4().hex[:4].upper()}")
    deadline = time.monotonic() + seconds

    async def one_client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            journey = next(subjects)
            state = entry(journey)
            for step in journey.steps:
                if time.monotonic() >= deadline:
                    return
                url = f"{deployment.url(step.service)}/subjects/{journey.subject_id}/{step.path}"
                answer = await send(http, url, state.body(step), tally)
                if answer is None:
                    break  # the rest of this subject would be refused too
                advance(1)
                for event in answer["events"]:
                    state.learn(step, event["event_type"], event["payload"])

    started = time.monotonic()
    async with client(token, clients) as http:
        await asyncio.gather(*(one_client(http) for _ in range(clients)))
    tally.seconds = time.monotonic() - started
    return tally


@dataclass
class Latency:
    rate: float
    sent: int = 0
    accepted: int = 0
    seen: list[float] = field(default_factory=list)  # seconds from sending to the journey showing it
    unseen: int = 0
    command: Tally = field(default_factory=Tally)

    def summary(self) -> dict[str, Any]:
        return {
            "rate": self.rate,
            "sent": self.sent,
            "accepted": self.accepted,
            "shown": len(self.seen),
            "not_shown": self.unseen,
            "p50_ms": round(percentile(self.seen, 50) * 1000, 1),
            "p99_ms": round(percentile(self.seen, 99) * 1000, 1),
            "command_p50_ms": round(percentile(self.command.latencies, 50) * 1000, 1),
            "command_p99_ms": round(percentile(self.command.latencies, 99) * 1000, 1),
        }


async def post_to_journey(
    deployment: Deployment, token: str, rate: float, seconds: float, advance: Advance, poll: float = 0.005
) -> Latency:
    """Open loop: enrolments sent at `rate` per second whatever the answers; for each, the time from
    sending it until its row is in `followup.journeys` (read directly, every `poll` seconds)."""
    result = Latency(rate)
    prefix = f"L{int(rate)}{uuid.uuid4().hex[:4].upper()}"
    base = deployment.url("enrollment")
    sent_at: dict[str, float] = {}
    conn = await db.connect(deployment.database_url)
    sending = True

    async def watch() -> None:
        while sending or len(result.seen) + result.unseen < len(sent_at):
            waiting = [s for s in sent_at if s not in shown]
            if waiting:
                now = time.monotonic()
                for row in await conn.fetch(
                    "SELECT subject_id FROM followup.journeys WHERE subject_id = ANY($1::text[])", waiting
                ):
                    shown.add(row["subject_id"])
                    result.seen.append(now - sent_at[row["subject_id"]])
                    advance(1)
            if not sending and time.monotonic() > give_up:
                result.unseen = len(sent_at) - len(result.seen)
                return
            await asyncio.sleep(poll)

    async def one(http: httpx.AsyncClient, subject_id: str) -> None:
        sent_at[subject_id] = time.monotonic()
        if await send(http, f"{base}/subjects/{subject_id}/enrolment", enrolment_body(), result.command):
            result.accepted += 1

    shown: set[str] = set()
    give_up = float("inf")
    watcher = asyncio.create_task(watch())
    commands = []
    async with client(token, 256) as http:
        started = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            commands.append(asyncio.create_task(one(http, f"{prefix}-01-{n + 1:06d}")))
            result.sent += 1
        await asyncio.gather(*commands)
    sending, give_up = False, time.monotonic() + 30
    await watcher
    await conn.close()
    return result
