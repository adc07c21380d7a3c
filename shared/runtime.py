"""What a running service holds: every resource, built by the composition root (`shared/service.py`)
before the first request, and handed to the HTTP handlers as a typed dependency (`Rt`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, Request
from faststream.kafka import KafkaBroker

from shared.access.grants import AccessStore
from shared.access.tokens import TokenVerifier
from shared.anchoring import Checkpointer
from shared.config import Settings
from shared.consumer import IdempotentConsumer
from shared.contract.topics import Source
from shared.eventstore.application import SubjectApplication
from shared.http.idempotency import IdempotencyStore
from shared.lag import LagMonitor
from shared.outbox import OutboxRelay
from shared.protocol import Protocol


@dataclass(frozen=True)
class Runtime:
    name: Source  # the service, and its PostgreSQL schema
    settings: Settings
    protocol: Protocol
    pool: asyncpg.Pool
    store: SubjectApplication[Any]  # the service's event store (synchronous: call it in a worker thread)
    idempotency: IdempotencyStore
    relay: OutboxRelay
    broker: KafkaBroker
    broker_ready: asyncio.Event  # set once the Kafka clients have started
    consumers: tuple[IdempotentConsumer, ...]  # one per read model of the service
    lag: LagMonitor
    tokens: TokenVerifier  # checks every request's bearer token
    access: AccessStore  # the grants' event store (written through the admin API)
    checkpoints: Checkpointer  # signs the chain heads now and then, to a file and a topic
    topic_problems: list[str] = field(default_factory=list)  # existing topics not as configured (/ready says so)

    @property
    def schema(self) -> str:
        return self.name


def runtime(request: Request) -> Runtime:
    found = request.app.state.runtime
    assert isinstance(found, Runtime), "the lifespan sets app.state.runtime before the first request"
    return found


# A handler's parameter `rt: Rt` receives the service's runtime.
Rt = Annotated[Runtime, Depends(runtime)]
