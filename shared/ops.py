"""Operations endpoints of every service: liveness, readiness and Prometheus metrics.

- `GET /health`: the process answers (liveness).
- `GET /ready`: PostgreSQL answers, the Kafka clients are connected and every consumer has its
  partitions ("not ready" otherwise); and nothing is going wrong slowly: the relay is not failing
  for long, no lag keeps growing, no event is parked ("degraded" otherwise). 503 unless "ready".
- `GET /metrics`: the relay's progress and errors, consumer outcomes and lag, in Prometheus format.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from shared import parking

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness")
async def health(request: Request) -> dict:
    return {"status": "ok", "service": request.app.state.runtime.spec.name}


# Without these the service cannot work ("not ready"); the other checks say it works badly ("degraded").
ESSENTIAL = ("database", "broker", "consumers")


async def _check(name: str, probe, timeout: float = 2.0) -> tuple[str, str | None]:
    """(name, None) when the probe answers True; else (name, what is wrong). A probe answers True,
    False, or the reason it fails."""
    try:
        result = await asyncio.wait_for(probe(), timeout)
    except Exception as exc:  # the point is to report it, whatever it is
        return name, f"{type(exc).__name__}: {exc}" or "failed"
    return name, None if result is True else result or "not ready"


READY_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Ready: every check is ok"},
    503: {"description": "Not ready (database, broker or consumers failing) or degraded (relay failing, lag "
                         "growing, events parked): each check says ok or what is wrong",
          "content": {"application/json": {}}},
}


@router.get("/ready", summary="Readiness: database, broker and consumers; relay, lag and parked events",
            responses=READY_ANSWERS)
async def ready(request: Request) -> JSONResponse:
    rt = request.app.state.runtime
    monitor: LagMonitor | None = getattr(request.app.state, "lag_monitor", None)

    async def database() -> bool:
        return await rt.pool.fetchval("SELECT 1") == 1

    async def broker() -> bool:
        return rt.broker_ready.is_set() and await rt.broker.ping(timeout=1.5)

    async def consumers() -> bool:
        return all(s.consumer is not None and s.consumer.assignment() for s in rt.broker.subscribers)

    async def relay() -> bool | str:
        failing = rt.relay.failing_for() if rt.relay else 0.0
        if failing <= rt.settings.ready_relay_failing_seconds:
            return True
        return f"failing for {failing:.0f} s: {rt.relay.last_error}"

    async def lag() -> bool | str:
        return "; ".join(monitor.growing() if monitor else []) or True

    async def parked() -> bool | str:
        counts = await parking.counts(rt.pool, rt.schema)
        return "; ".join(f"{n} event(s) parked for {consumer}: see `ucart parked list`"
                         for consumer, n in counts.items()) or True

    checks = dict(await asyncio.gather(_check("database", database), _check("broker", broker),
                                       _check("consumers", consumers), _check("relay", relay),
                                       _check("lag", lag), _check("parked", parked)))
    failing = {name: error for name, error in checks.items() if error}
    status = "not ready" if failing.keys() & ESSENTIAL else "degraded" if failing else "ready"
    body = {"status": status, "service": rt.spec.name,
            "checks": {name: error or "ok" for name, error in checks.items()}}
    return JSONResponse(body, status_code=503 if failing else 200)


class LagMonitor:
    """Samples the relay's lag and each consumer group's lag every few seconds, and tells which kept
    growing over the last `window` seconds: above zero at every sample, and higher at the end than
    at the start. (A service that keeps up brings its lags back to zero between bursts.)"""

    def __init__(self, runtime, window: float):
        self.rt, self.window = runtime, window
        self.every = min(5.0, window / 6)
        self.samples: deque[tuple[float, dict[str, int]]] = deque()  # (monotonic time, lag by name)

    async def run(self) -> None:
        while True:
            try:
                lags = await asyncio.wait_for(self.sample(), 2 * self.every)
            except asyncio.CancelledError:
                raise
            except Exception:  # PostgreSQL or Kafka is down (the other checks say so): start over
                self.samples.clear()
            else:
                self.record(time.monotonic(), lags)
            await asyncio.sleep(self.every)

    async def sample(self) -> dict[str, int]:
        lags = {"relay": await self.rt.relay.lag()} if self.rt.relay else {}
        for group, _topic, _partition, lag in await _consumer_lag(self.rt):
            name = f"consumer group {group}"
            lags[name] = lags.get(name, 0) + lag
        return lags

    def record(self, at: float, lags: dict[str, int]) -> None:
        self.samples.append((at, lags))
        while len(self.samples) > 1 and at - self.samples[1][0] >= self.window:
            self.samples.popleft()  # keep one sample from the window's start, or just before it

    def growing(self) -> list[str]:
        if not self.samples or self.samples[-1][0] - self.samples[0][0] < self.window:
            return []  # not watched for a whole window yet
        reasons = []
        for name, now in self.samples[-1][1].items():
            series = [lags.get(name, 0) for _, lags in self.samples]
            if min(series) > 0 and now > series[0]:
                reasons.append(f"{name} lag grew from {series[0]} to {now} in {self.window:.0f} s "
                               "without reaching 0")
        return reasons


class _Collector:
    """Reads the numbers at scrape time from the running relay and consumers."""

    def __init__(self, runtime, relay_lag: int | None, consumer_lag: list[tuple[str, str, int, int]]):
        self.rt, self.relay_lag, self.consumer_lag = runtime, relay_lag, consumer_lag

    def collect(self):
        service, relay = self.rt.spec.name, self.rt.relay
        for family, name, text, value in (
            (CounterMetricFamily, "ucart_relay_published", "Events the outbox relay published",
             relay.published if relay else 0),
            (CounterMetricFamily, "ucart_relay_errors", "Failed attempts of the outbox relay",
             relay.errors if relay else 0),
            (CounterMetricFamily, "ucart_relay_republished", "Events the relay sent again after a failure or a "
             "broker reset", relay.republished if relay else 0),
            (GaugeMetricFamily, "ucart_relay_failing_seconds", "How long the relay has kept failing (0: it works)",
             relay.failing_for() if relay else 0),
        ):
            metric = family(name, text, labels=["service"])
            metric.add_metric([service], value)
            yield metric
        if self.relay_lag is not None:
            lag = GaugeMetricFamily("ucart_relay_lag_events", "Events committed but not yet published",
                                    labels=["service"])
            lag.add_metric([service], self.relay_lag)
            yield lag
        outcomes = CounterMetricFamily("ucart_consumer_messages", "Messages handled by outcome",
                                       labels=["consumer", "outcome"])
        for consumer in self.rt.consumers:
            for outcome, count in consumer.counts.items():
                outcomes.add_metric([consumer.name, outcome], count)
        yield outcomes
        consumer_lag = GaugeMetricFamily("ucart_consumer_lag_messages", "Messages not yet consumed",
                                         labels=["group", "topic", "partition"])
        for group, topic, partition, lag in self.consumer_lag:
            consumer_lag.add_metric([group, topic, str(partition)], lag)
        yield consumer_lag


async def _consumer_lag(rt) -> list[tuple[str, str, int, int]]:
    rows = []
    for subscriber in rt.broker.subscribers:
        consumer = subscriber.consumer
        if consumer is None:
            continue
        group = consumer._group_id or ""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            rows.append((group, tp.topic, tp.partition, max(0, highwater - position)))
    return rows


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    rt = request.app.state.runtime
    relay_lag = None
    if rt.relay is not None:
        try:
            relay_lag = await rt.relay.lag()
        except Exception:  # database down: report what we can
            relay_lag = None
    registry = CollectorRegistry()
    registry.register(_Collector(rt, relay_lag, await _consumer_lag(rt)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
