"""How far behind the relay and the consumers are, and whether that keeps growing (read by /ready
and /metrics)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from faststream.kafka import KafkaBroker

from shared.outbox import OutboxRelay


class LagMonitor:
    """Samples the relay's lag and each consumer group's lag every few seconds, and tells which kept
    growing over the last `window` seconds: above zero at every sample, and higher at the end than
    at the start. (A service that keeps up brings its lags back to zero between bursts.)"""

    def __init__(self, relay: OutboxRelay, broker: KafkaBroker, window: float):
        self.relay, self.broker, self.window = relay, broker, window
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
        lags = {"relay": await self.relay.lag()}
        for group, _topic, _partition, lag in await consumer_lag(self.broker):
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
                reasons.append(f"{name} lag grew from {series[0]} to {now} in {self.window:.0f} s without reaching 0")
        return reasons


def kafka_consumers(broker: KafkaBroker) -> list[Any]:
    """The aiokafka consumer of each subscriber that has started (FastStream keeps it as `.consumer`)."""
    return [c for s in broker.subscribers if (c := getattr(s, "consumer", None)) is not None]


async def consumer_lag(broker: KafkaBroker) -> list[tuple[str, str, int, int]]:
    """(group, topic, partition, messages not yet consumed) for each partition assigned here."""
    rows = []
    for consumer in kafka_consumers(broker):
        group = consumer._group_id or ""
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            rows.append((group, tp.topic, tp.partition, max(0, highwater - position)))
    return rows
