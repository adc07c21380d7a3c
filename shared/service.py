"""What every service process is made of, wired the same way in each: an HTTP API, an event store,
an outbox relay to its topic, and the consumers of what it learns from Kafka.

`services/<name>/main.py` describes its service with a `ServiceSpec`; `build_app` does the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from shared import db, ops, parking
from shared import facts as subject_facts
from shared.config import Settings
from shared.consumer import IdempotentConsumer, dead_letter_publisher, rebuild_if_outdated, subscribe
from shared.contract.envelope import Envelope, Source
from shared.contract.events import Payload
from shared.contract.topics import SOURCES, dead_letter_topic, topic_for
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.eventstore.meta import EventMeta
from shared.http import problems
from shared.http.idempotency import IdempotencyStore
from shared.outbox import OutboxRelay
from shared.protocol import Protocol, load_protocol
from shared.readmodel import ReadModel
from shared.redact import mask_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceSpec:
    name: Source
    title: str
    description: str
    application: type[SubjectApplication]
    routers: tuple[APIRouter, ...]
    read_models: tuple[ReadModel, ...]  # what it learns from Kafka, one consumer each


@dataclass
class Runtime:
    """Everything a request handler or consumer of one service needs."""

    spec: ServiceSpec
    settings: Settings
    protocol: Protocol
    broker: KafkaBroker
    consumers: list[IdempotentConsumer] = field(default_factory=list)  # one per spec.read_models
    pool: asyncpg.Pool | None = None
    app: SubjectApplication | None = None
    relay: OutboxRelay | None = None
    idempotency: IdempotencyStore | None = None
    broker_ready: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def schema(self) -> str:
        return self.spec.name

    def topic(self, source: Source) -> str:
        return topic_for(source, self.settings.topic_prefix)

    def relay_nudge(self) -> None:
        if self.relay:
            self.relay.nudge()

    async def call(self, fn: Callable, *args):
        """Run a synchronous use case of the event-store application in a worker thread."""
        return await asyncio.to_thread(fn, *args)


def use_case(method: Callable[..., list[Envelope]], *, facts: bool = False, protocol: bool = False):
    """Adapt an application method `(self, meta, payload[, facts][, protocol])` to a command endpoint:
    load what the service learned about the subject if the rules need it, then run the method in a
    worker thread."""

    async def run(rt: Runtime, meta: EventMeta, payload: Payload) -> list[Envelope]:
        args: list = []
        if facts:
            args.append(await subject_facts.load(rt.pool, rt.schema, meta.subject_id))
        if protocol:
            args.append(rt.protocol)
        return await rt.call(method, rt.app, meta, payload, *args)

    return run


def build_runtime(spec: ServiceSpec, settings: Settings) -> Runtime:
    """Everything that exists without I/O: the broker with its publishers and subscribers.
    (The AsyncAPI document is generated from this.)"""
    broker = KafkaBroker(settings.bootstrap_servers, client_id=f"ucart-{spec.name}", acks="all",
                         enable_idempotence=False,  # the embedded broker refuses idempotent producers
                         request_timeout_ms=10_000,  # fail a send to a dead broker soon; the relay retries
                         # A topic re-created with another layout after a broker restart fails sends
                         # until the clients refresh their metadata: do so within 10 s, not 5 minutes.
                         metadata_max_age_ms=10_000)
    runtime = Runtime(spec=spec, settings=settings, protocol=load_protocol(settings.protocol_file), broker=broker)
    prefix = settings.topic_prefix
    for model in spec.read_models:
        name = model.consumer
        dlq = dead_letter_topic(name, prefix)
        # The pool comes at start: no I/O here (the AsyncAPI document is generated from this).
        consumer = IdempotentConsumer(model.projection(spec.name), None,  # type: ignore[arg-type]
                                      schema=spec.name, dead_letter=dead_letter_publisher(broker, dlq, name))
        subscribe(broker, consumer, topics=[runtime.topic(s) for s in model.sources],
                  group_id=f"{prefix}ucart-{name}", dead_letter_topic=dlq)
        runtime.consumers.append(consumer)
    return runtime


def events_publisher(runtime: Runtime):
    publisher = runtime.broker.publisher(
        runtime.topic(runtime.spec.name),
        schema=Envelope,
        title=f"{runtime.topic(runtime.spec.name)}:publish",
        description=f"Every event the {runtime.spec.name} service stores, in order per subject. "
        "Key: subject id (UTF-8). Headers: event_type, event_id, schema_version, correlation_id.",
    )

    async def publish(envelope: Envelope):
        await runtime.broker_ready.wait()
        return await publisher.publish(
            envelope.model_dump_json().encode(),
            key=envelope.kafka_key(),
            headers=envelope.kafka_headers(),
            correlation_id=str(envelope.correlation_id),
        )

    return publish


def asyncapi(spec: ServiceSpec, settings: Settings | None = None) -> AsyncAPI:
    runtime = build_runtime(spec, settings or Settings())
    events_publisher(runtime)
    return AsyncAPI(runtime.broker, title=f"UCAR-T {spec.title} events", version="1.0.0",
                    description=spec.description)


async def ensure_topics(settings: Settings, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(t, num_partitions=settings.topic_partitions, replication_factor=1)
                   for t in topics if t not in existing]
        if missing:
            with suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


async def _connect_broker(runtime: Runtime) -> None:
    """Start Kafka clients in the background, retrying: commands must work while Kafka is down."""
    topics = [runtime.topic(s) for s in SOURCES]
    while True:
        try:
            await ensure_topics(runtime.settings, topics)
            await runtime.broker.start()
            runtime.broker_ready.set()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Kafka not reachable at %s (%s); retrying", mask_url(runtime.settings.bootstrap_servers), exc)
            await asyncio.sleep(2)


async def _reconcile_forever(runtime: Runtime) -> None:
    """The safety net under Kafka: apply from the event stores whatever the topics did not deliver."""
    while True:
        for consumer, model in zip(runtime.consumers, runtime.spec.read_models, strict=True):
            try:
                if applied := await consumer.reconcile(model.sources):
                    log.warning("%s: applied %d event(s) from the event stores that Kafka had not delivered",
                                consumer.name, applied)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: reconciliation failed (%s); retrying later", consumer.name, exc)
        try:
            for consumer_name, parked in (await parking.counts(runtime.pool, runtime.schema)).items():
                log.warning("%s: %d event(s) parked and stepped over; see `ucart parked list`", consumer_name, parked)
        except Exception as exc:  # reported, like a failed pass; the loop goes on
            log.warning("could not count the parked events (%s); retrying later", exc)
        await asyncio.sleep(runtime.settings.reconcile_seconds)


def build_app(spec: ServiceSpec, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: point it at PostgreSQL (`make demo` sets it for you).")
    runtime = build_runtime(spec, settings)
    publish = events_publisher(runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.pool = await db.create_pool(settings.database_url)
        await runtime.pool.execute(db.plumbing_ddl(spec.name) + "".join(m.ddl(spec.name) for m in spec.read_models))
        for consumer, model in zip(runtime.consumers, spec.read_models, strict=True):
            consumer.pool = runtime.pool
            await rebuild_if_outdated(consumer, model.sources, model.version)
        runtime.idempotency = IdempotencyStore(runtime.pool, spec.name)
        runtime.app = await asyncio.to_thread(spec.application, postgres_env(settings.database_url, spec.name))
        own_topic = [runtime.topic(spec.name)]
        runtime.relay = OutboxRelay(runtime.app, runtime.pool, publish, schema=spec.name,
                                    poll_seconds=settings.relay_poll_seconds,
                                    prepare=lambda: ensure_topics(settings, own_topic))
        relay_task = asyncio.create_task(runtime.relay.run())
        tasks = [asyncio.create_task(_connect_broker(runtime)), asyncio.create_task(_reconcile_forever(runtime))]
        app.state.lag_monitor = ops.LagMonitor(runtime, settings.ready_lag_window_seconds)  # read by /ready
        tasks.append(asyncio.create_task(app.state.lag_monitor.run()))
        log.info("%s service ready", spec.name)
        try:
            yield
        finally:
            # Uvicorn has finished the requests in flight; let the relay finish its batch, then stop
            # the consumers (a message being handled is either committed with its offset, or redelivered).
            await runtime.relay.stop(relay_task)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, relay_task, return_exceptions=True)
            await runtime.broker.stop()
            await runtime.pool.close()
            runtime.app.close()

    app = FastAPI(title=f"UCAR-T {spec.title}", description=spec.description, version="0.1.0",
                  lifespan=lifespan)
    app.state.runtime = runtime
    problems.install(app)
    for router in spec.routers:
        app.include_router(router)

    app.include_router(ops.router)
    return app


def serve(spec: ServiceSpec) -> None:
    import uvicorn

    settings = Settings()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {spec.name} %(levelname)s %(name)s: %(message)s")
    uvicorn.run(build_app(spec, settings), host=settings.host, port=settings.port(spec.name),
                log_level="info", timeout_graceful_shutdown=10)
