"""Operations endpoints of every service: liveness, readiness and Prometheus metrics.

- `GET /health`: the process answers (liveness).
- `GET /ready`: PostgreSQL answers, the Kafka clients are connected and every consumer has its
  partitions; 503 with the failing checks otherwise.
- `GET /metrics`: relay lag and published count, consumer outcomes and lag, in Prometheus format.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness")
async def health(request: Request) -> dict:
    return {"status": "ok", "service": request.app.state.runtime.spec.name}


async def _check(name: str, probe, timeout: float = 2.0) -> tuple[str, str | None]:
    try:
        ok = await asyncio.wait_for(probe(), timeout)
        return name, None if ok else "not ready"
    except Exception as exc:  # the point is to report it, whatever it is
        return name, f"{type(exc).__name__}: {exc}" or "failed"


@router.get("/ready", summary="Readiness: database, broker and consumers")
async def ready(request: Request) -> JSONResponse:
    rt = request.app.state.runtime

    async def database() -> bool:
        return await rt.pool.fetchval("SELECT 1") == 1

    async def broker() -> bool:
        return rt.broker_ready.is_set() and await rt.broker.ping(timeout=1.5)

    async def consumers() -> bool:
        return all(s.consumer is not None and s.consumer.assignment() for s in rt.broker.subscribers)

    checks = dict(await asyncio.gather(_check("database", database), _check("broker", broker),
                                       _check("consumers", consumers)))
    failing = {name: error for name, error in checks.items() if error}
    body = {"status": "not ready" if failing else "ready", "service": rt.spec.name,
            "checks": {name: error or "ok" for name, error in checks.items()}}
    return JSONResponse(body, status_code=503 if failing else 200)


class _Collector:
    """Reads the numbers at scrape time from the running relay and consumers."""

    def __init__(self, runtime, relay_lag: int | None, consumer_lag: list[tuple[str, str, int, int]]):
        self.rt, self.relay_lag, self.consumer_lag = runtime, relay_lag, consumer_lag

    def collect(self):
        service = self.rt.spec.name
        published = CounterMetricFamily("ucart_relay_published", "Events the outbox relay published", labels=["service"])
        published.add_metric([service], self.rt.relay.published if self.rt.relay else 0)
        yield published
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
