"""Operations endpoints of every service: liveness, readiness and Prometheus metrics.

- `GET /health`: the process answers (liveness).
- `GET /ready`: PostgreSQL answers, the Kafka clients are connected and every consumer has its
  partitions ("not ready" otherwise); and nothing is going wrong slowly: the relay is not failing
  for long, no lag keeps growing, no event is parked ("degraded" otherwise). 503 unless "ready".
- `GET /metrics`: the relay's progress and errors, consumer outcomes and lag, in Prometheus format.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared import parking
from shared.errors import Forbidden
from shared.http.identity import authenticate, bearer, bearer_token
from shared.lag import consumer_lag, kafka_consumers
from shared.runtime import Rt, Runtime

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness")
async def health(rt: Rt) -> dict[str, Any]:
    return {"status": "ok", "service": rt.name}


# Without these the service cannot work ("not ready"); the other checks say it works badly ("degraded").
ESSENTIAL = ("database", "broker", "consumers")


async def _check(name: str, probe: Callable[[], Awaitable[bool | str]], timeout: float = 2.0) -> tuple[str, str | None]:
    """(name, None) when the probe answers True; else (name, what is wrong). A probe answers True,
    False, or the reason it fails."""
    try:
        result = await asyncio.wait_for(probe(), timeout)
    except Exception as exc:  # the point is to report it, whatever it is
        return name, f"{type(exc).__name__}: {exc}"
    return name, None if result is True else result or "not ready"


READY_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready: every check is ok"},
    503: {
        "description": "Not ready (database, broker or consumers failing) or degraded (relay failing, lag "
        "growing, events parked, a topic not as configured): each check says ok or what is wrong",
        "content": {"application/json": {}},
    },
}


@router.get(
    "/ready", summary="Readiness: database, broker and consumers; relay, lag and parked events", responses=READY_ANSWERS
)
async def ready(rt: Rt) -> JSONResponse:
    async def database() -> bool:
        return bool(await rt.pool.fetchval("SELECT 1") == 1)

    async def broker() -> bool:
        return rt.broker_ready.is_set() and await rt.broker.ping(timeout=1.5)

    async def consumers() -> bool:
        clients = kafka_consumers(rt.broker)
        return len(clients) == len(rt.broker.subscribers) and all(c.assignment() for c in clients)

    async def relay() -> bool | str:
        failing = rt.relay.failing_for()
        if failing <= rt.settings.ready_relay_failing_seconds:
            return True
        return f"failing for {failing:.0f} s: {rt.relay.last_error}"

    async def lag() -> bool | str:
        return "; ".join(rt.lag.growing()) or True

    async def topics() -> bool | str:
        return "; ".join(rt.topic_problems) or True

    async def parked() -> bool | str:
        counts = await parking.counts(rt.pool, rt.schema)
        return (
            "; ".join(f"{n} event(s) parked for {consumer}: see `ucart parked list`" for consumer, n in counts.items())
            or True
        )

    checks = dict(
        await asyncio.gather(
            _check("database", database),
            _check("broker", broker),
            _check("consumers", consumers),
            _check("relay", relay),
            _check("lag", lag),
            _check("parked", parked),
            _check("topics", topics),
        )
    )
    failing = {name: error for name, error in checks.items() if error}
    status = "not ready" if failing.keys() & ESSENTIAL else "degraded" if failing else "ready"
    body = {"status": status, "service": rt.name, "checks": {name: error or "ok" for name, error in checks.items()}}
    return JSONResponse(body, status_code=503 if failing else 200)


class _Collector:
    """Reads the numbers at scrape time from the running relay and consumers."""

    def __init__(self, rt: Runtime, relay_lag: int | None, consumer_lag: list[tuple[str, str, int, int]]):
        self.rt, self.relay_lag, self.consumer_lag = rt, relay_lag, consumer_lag

    def collect(self) -> Iterator[Metric]:
        service, relay = self.rt.name, self.rt.relay
        for family, name, text, value in (
            (CounterMetricFamily, "ucart_relay_published", "Events the outbox relay published", relay.published),
            (CounterMetricFamily, "ucart_relay_errors", "Failed attempts of the outbox relay", relay.errors),
            (
                CounterMetricFamily,
                "ucart_relay_republished",
                "Events the relay sent again after a failure or a broker reset",
                relay.republished,
            ),
            (
                GaugeMetricFamily,
                "ucart_relay_failing_seconds",
                "How long the relay has kept failing (0: it works)",
                relay.failing_for(),
            ),
        ):
            metric = family(name, text, labels=["service"])
            metric.add_metric([service], value)
            yield metric
        if self.relay_lag is not None:
            relay_lag = GaugeMetricFamily(
                "ucart_relay_lag_events", "Events committed but not yet published", labels=["service"]
            )
            relay_lag.add_metric([service], self.relay_lag)
            yield relay_lag
        outcomes = CounterMetricFamily(
            "ucart_consumer_messages", "Messages handled by outcome", labels=["consumer", "outcome"]
        )
        for consumer in self.rt.consumers:
            for outcome, count in consumer.counts.items():
                outcomes.add_metric([consumer.name, outcome], count)
        yield outcomes
        lags = GaugeMetricFamily(
            "ucart_consumer_lag_messages", "Messages not yet consumed", labels=["group", "topic", "partition"]
        )
        for group, topic, partition, lag in self.consumer_lag:
            lags.add_metric([group, topic, str(partition)], lag)
        yield lags


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(rt: Rt, request: Request) -> Response:
    """Open when UCART_METRICS_OPEN (the default: keep the port internal); else a bearer token of
    someone with a grant (read here, not declared: the open default must not claim a security scheme)."""
    if not rt.settings.metrics_open:
        credentials = await bearer(request)
        _, held = await authenticate(rt, bearer_token(credentials))
        if not held:
            raise Forbidden("Metrics need a token of someone with a grant (a monitoring service account).")
    relay_lag = None
    try:
        relay_lag = await rt.relay.lag()
    except Exception:  # database down: report what we can
        relay_lag = None
    registry = CollectorRegistry()
    registry.register(_Collector(rt, relay_lag, await consumer_lag(rt.broker)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
