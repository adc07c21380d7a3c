"""The composition root: what every service process is made of, wired the same way in each (an HTTP
API, an event store, an outbox relay to its topic, and the consumers of what it learns from Kafka).

`services/<name>/main.py` describes its service with a `ServiceSpec`; `build_app` does the rest. The
lifespan builds every resource (`running`) before the first request and hands them to the handlers as
one `Runtime`; nothing in `shared/` imports this module.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, TopicAuthorizationFailedError, for_code
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.persistence import OperationalError
from fastapi import APIRouter, FastAPI
from faststream.kafka import KafkaBroker, KafkaMessage
from faststream.specification import AsyncAPI

from shared import db, ops, parking, transport
from shared.access import grants, reads
from shared.access.tokens import TokenVerifier
from shared.anchoring import Checkpointer, PublishLine
from shared.config import Settings
from shared.consumer import (
    DeadLetter,
    Handler,
    IdempotentConsumer,
    dead_letter_publisher,
    rebuild_if_outdated,
    subscribe,
)
from shared.contract.checkpoint import Checkpoint
from shared.contract.envelope import Envelope
from shared.contract.topics import SOURCES, Source, checkpoint_topic, dead_letter_topic, topic_for
from shared.eventstore.aggregate import SubjectStream
from shared.eventstore.application import SubjectApplication, postgres_env
from shared.http import grants as grants_api
from shared.http import problems
from shared.http.idempotency import IdempotencyStore
from shared.lag import LagMonitor
from shared.outbox import OutboxRelay, Publish
from shared.protocol import load_protocol
from shared.readmodel import ReadModel
from shared.redact import mask_url
from shared.runtime import Runtime
from shared.signing import Signer, Verifier, load_signer, load_verifier

log = logging.getLogger(__name__)
SHUTDOWN_STEP_SECONDS = 10.0


@dataclass(frozen=True)
class ServiceSpec:
    name: Source
    title: str
    description: str
    aggregate: type[SubjectStream]  # one stream of it per subject in the service's event store
    routers: tuple[APIRouter, ...]
    read_models: tuple[ReadModel, ...]  # what it learns from Kafka, one consumer each


@dataclass(frozen=True)
class Wiring:
    """The broker with the service's topics declared on it; no I/O (the AsyncAPI document is made
    from this)."""

    broker: KafkaBroker
    publish: Publish  # an envelope to the service's topic, signed, once the broker is ready
    publish_checkpoint: PublishLine  # a checkpoint line to the service's checkpoint topic, once it is ready
    dead_letters: dict[str, DeadLetter]  # by consumer name


def wire(spec: ServiceSpec, settings: Settings, broker_ready: asyncio.Event, signer: Signer) -> Wiring:
    broker = KafkaBroker(
        # FastStream takes a string for one server: "a:9092,b:9092" must come as a list (aiokafka splits it).
        [server.strip() for server in settings.bootstrap_servers.split(",")],
        client_id=f"ucart-{spec.name}",
        acks="all",
        # No duplicates from the producer's own retries, per-partition order kept; Tansu refuses
        # InitProducerId (the design stays correct without it: consumers drop copies).
        enable_idempotence=not settings.tansu,
        allow_auto_create_topics=False,  # subscribers never create topics: `ensure_topics` declares them
        request_timeout_ms=10_000,  # fail a send to a dead broker soon; the relay retries
        # A topic re-created with another layout after a Tansu restart fails sends
        # until the clients refresh their metadata: do so within 10 s, not 5 minutes.
        metadata_max_age_ms=10_000,
        security=transport.kafka_security(settings),  # TLS and SASL, as every other Kafka client here
    )
    topic = topic_for(spec.name, settings.topic_prefix)
    publisher = broker.publisher(
        topic,
        schema=Envelope,
        title=f"{topic}:publish",
        description=f"Every event the {spec.name} service stores, in order per subject. "
        "Key: subject id (UTF-8). Headers: event_type, event_id, schema_version, correlation_id; "
        f"key_id and signature: the Ed25519 signature (base64) of the exact value bytes by a key of {spec.name}, "
        "named by its key id. Consumers park a message that does not verify.",
    )

    async def publish(envelope: Envelope) -> Any:
        """Queue the event for the broker; the broker's answer is the future returned (the relay sends a
        batch at once: the producer batches it, in order per partition)."""
        await broker_ready.wait()
        value = envelope.model_dump_json().encode()  # signed as sent: a reader verifies these very bytes
        return await publisher.publish(
            value,
            key=envelope.kafka_key(),
            headers=envelope.kafka_headers() | signer.headers(value),
            correlation_id=str(envelope.correlation_id),
            no_confirm=True,
        )

    checkpoints = checkpoint_topic(spec.name, settings.topic_prefix)
    checkpoint_publisher = broker.publisher(
        checkpoints,
        schema=Checkpoint,
        title=f"{checkpoints}:publish",
        description=f"The {spec.name} service's signed checkpoints of its event store's chain heads, every "
        f"`UCART_CHECKPOINT_SECONDS` when the store moved; the same lines as its `{spec.name}.jsonl` checkpoint "
        "file. Key: the service name. Kept forever (retention.ms=-1): auditors verify the store against them.",
    )

    async def publish_checkpoint(line: bytes) -> Any:
        await broker_ready.wait()
        return await checkpoint_publisher.publish(line, key=spec.name.encode())

    dead_letters = {
        m.consumer: dead_letter_publisher(broker, dead_letter_topic(m.consumer, settings.topic_prefix), m.consumer)
        for m in spec.read_models
    }
    return Wiring(broker, publish, publish_checkpoint, dead_letters)


def subscribe_all(wiring: Wiring, spec: ServiceSpec, settings: Settings, consumers: dict[str, Handler]) -> None:
    prefix = settings.topic_prefix
    for model in spec.read_models:
        subscribe(
            wiring.broker,
            consumers[model.consumer],
            topics=[topic_for(s, prefix) for s in model.sources],
            group_id=f"{prefix}ucart-{model.consumer}",
            dead_letter_topic=dead_letter_topic(model.consumer, prefix),
        )


@dataclass(frozen=True)
class _Described:
    """A subscription's consumer in the AsyncAPI document, which describes and runs nothing."""

    name: str

    async def handle(self, message: KafkaMessage) -> None:
        raise RuntimeError("documentation only")


def asyncapi(spec: ServiceSpec, settings: Settings | None = None) -> AsyncAPI:
    settings = settings or Settings()
    # The document publishes nothing: a key made for it and never kept, so that `make docs` needs no keys.
    unused = Signer(f"{spec.name}-documentation", Ed25519PrivateKey.generate())
    wiring = wire(spec, settings, asyncio.Event(), unused)
    subscribe_all(wiring, spec, settings, {m.consumer: _Described(m.consumer) for m in spec.read_models})
    return AsyncAPI(wiring.broker, title=f"UCAR-T {spec.title} events", version="1.0.0", description=spec.description)


def service_topics(spec: ServiceSpec, settings: Settings) -> list[str]:
    """Every topic the service may read or write: the event topics, its checkpoint topic and the
    dead-letter topic of each of its consumers. Declared at start: no client ever creates a topic."""
    prefix = settings.topic_prefix
    return [
        *(topic_for(s, prefix) for s in SOURCES),
        checkpoint_topic(spec.name, prefix),
        *(dead_letter_topic(m.consumer, prefix) for m in spec.read_models),
    ]


def topic_configs(settings: Settings) -> dict[str, str]:
    # The whole history stays (outside subscribers replay from the earliest offset; auditors keep the
    # checkpoints), and an acknowledged write is on min.insync.replicas brokers (the producers use acks=all).
    return {"retention.ms": "-1", "min.insync.replicas": str(settings.min_insync_replicas)}


async def ensure_topics(settings: Settings, topics: list[str]) -> list[str]:
    """Create the missing topics with the configured partitions, replication and configs; return what is
    wrong (logged as errors, and /ready says so): a topic this client may not create, or an existing topic
    with another partition count (per-subject order would break were it changed: never altered here)."""
    admin = AIOKafkaAdminClient(**transport.kafka_options(settings))
    try:
        await admin.start()
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                t,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=topic_configs(settings),
            )
            for t in topics
            if t not in existing
        ]
        problems = []
        if missing:
            answer = await admin.create_topics(missing)
            for name, code, *_ in answer.topic_errors:  # the admin client does not raise them itself
                error = for_code(code)(name) if code else None
                if isinstance(error, TopicAuthorizationFailedError):  # no retry grants it: an operator must
                    problems.append(f"topic {name} could not be created: not authorised (ACL)")
                elif error is not None and not isinstance(error, TopicAlreadyExistsError):
                    raise error  # a passing failure (no controller yet...): the caller retries
        # Only topics known to exist: a metadata request naming an unknown topic may create it (Tansu).
        known = [t for t in topics if t in existing]
        problems += [
            f"topic {d['topic']} has {len(d['partitions'])} partitions, not {settings.topic_partitions}"
            for d in (await admin.describe_topics(known) if known else [])
            if not d["error_code"] and len(d["partitions"]) != settings.topic_partitions
        ]
        for problem in problems:
            log.error("%s (see docs/operations.md, Topics)", problem)
        return problems
    finally:
        await admin.close()


async def _connect_broker(runtime: Runtime, topics: list[str]) -> None:
    """Start Kafka clients in the background, retrying: commands must work while Kafka is down."""
    while True:
        try:
            runtime.topic_problems[:] = await ensure_topics(runtime.settings, topics)
            await runtime.broker.start()
            runtime.broker_ready.set()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Kafka not reachable at %s (%s); retrying", mask_url(runtime.settings.bootstrap_servers), exc)
            await asyncio.sleep(2)


async def _reconcile_forever(runtime: Runtime, sources: list[tuple[IdempotentConsumer, tuple[Source, ...]]]) -> None:
    """The safety net under Kafka: apply from the event stores whatever the topics did not deliver."""
    while True:
        for consumer, sources_of_it in sources:
            try:
                if applied := await consumer.reconcile(sources_of_it):
                    log.warning(
                        "%s: applied %d event(s) from the event stores that Kafka had not delivered",
                        consumer.name,
                        applied,
                    )
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


async def _declare(settings: Settings, topics: list[str]) -> None:
    await ensure_topics(settings, topics)


async def _nothing() -> None:
    return None


def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set: point it at PostgreSQL (`make demo` sets it for you).")
    return settings.database_url


@dataclass(frozen=True)
class ServiceKeys:
    signer: Signer  # the service's own private key: what it publishes is signed with it
    verifier: Verifier  # every public key: what its consumers read is verified with them


def service_keys(settings: Settings, spec: ServiceSpec) -> ServiceKeys:
    """The service's keys, loaded once, before anything starts. Without its private key every event it
    published would be parked by its consumers, so the service does not start."""
    keys_dir = settings.signing_keys_dir.resolve()
    path = keys_dir / f"{spec.name}.key"
    try:
        signer = load_signer(keys_dir, spec.name)
    except FileNotFoundError:
        raise SystemExit(_no_key(spec.name, path, "there is no file there")) from None
    except (OSError, ValueError) as exc:  # unreadable, or not an Ed25519 key
        raise SystemExit(_no_key(spec.name, path, f"it cannot be used ({exc})")) from None
    try:
        verifier = load_verifier(keys_dir)
    except (OSError, ValueError) as exc:  # a damaged or misnamed `.pub`: the keys are not what they seem
        raise SystemExit(f"The public keys in {keys_dir} cannot be used: {exc}") from None
    for source in sorted({s for m in spec.read_models for s in m.sources} - verifier.services):
        log.warning(
            "no public key of %s in %s: every message on its topic will be parked (its events still come "
            "from its event store, by reconciliation)",
            source,
            keys_dir,
        )
    return ServiceKeys(signer, verifier)


def _no_key(service: str, path: Path, problem: str) -> str:
    return (
        f"The {service} service cannot sign its events: its Ed25519 private key is expected at {path}, and "
        f"{problem}. UCART_KEYS_DIR names the keys directory (default: <UCART_DATA_DIR>/keys). `make demo` "
        'generates the demo\'s keys there; production provisions one per service (docs/operations.md, "Service keys").'
    )


def _check_transport(settings: Settings) -> None:
    try:
        transport.check(settings)
    except transport.TransportError as exc:
        raise SystemExit(str(exc)) from None


T = TypeVar("T")
START_PATIENCE = 30.0  # seconds an event store may take to answer at start


async def _patiently(open_store: Callable[[], Awaitable[T]]) -> T:
    """Open an event store, waiting for a PostgreSQL that is slow to answer at start (a busy machine: the
    store's pool gives a connection up after a second, made for requests, not for start-up)."""
    deadline = asyncio.get_running_loop().time() + START_PATIENCE
    while True:
        try:
            return await open_store()
        except OperationalError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.warning("the event store's database did not answer in time (%s); trying again", exc)
            await asyncio.sleep(1.0)


@asynccontextmanager
async def running(spec: ServiceSpec, settings: Settings, keys: ServiceKeys) -> AsyncIterator[Runtime]:
    """Build every resource of the service, in order, run its background tasks, and close it all.
    `keys`: the service's keys (`service_keys`), loaded before anything else."""
    database_url = _database_url(settings)
    protocol = load_protocol(settings.protocol_file)
    broker_ready = asyncio.Event()
    wiring = wire(spec, settings, broker_ready, keys.signer)
    pool = await db.create_pool(database_url)
    try:
        await pool.execute(db.plumbing_ddl(spec.name) + "".join(m.ddl(spec.name) for m in spec.read_models))
        consumers = tuple(
            IdempotentConsumer(
                m.projection(spec.name),
                pool,
                schema=spec.name,
                verifier=keys.verifier,
                dead_letter=wiring.dead_letters[m.consumer],
            )
            for m in spec.read_models
        )
        for consumer, model in zip(consumers, spec.read_models, strict=True):
            await rebuild_if_outdated(consumer, model.sources, model.version)
        subscribe_all(wiring, spec, settings, {c.name: c for c in consumers})
        store_env = postgres_env(database_url, spec.name)
        store = await _patiently(lambda: asyncio.to_thread(SubjectApplication, spec.aggregate, spec.name, store_env))
        await grants.ensure_tables(pool, reads.DDL)
        access_env = postgres_env(database_url, grants.SCHEMA) | {"POSTGRES_POOL_SIZE": "2"}
        access = await _patiently(lambda: grants.open_store(pool, access_env))
        tokens = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms, settings.jwks)
    except BaseException:
        await pool.close()
        raise
    topics = service_topics(spec, settings)
    # After a failure Tansu may have come back empty: declare the topics again before sending.
    # A broker that keeps its log has them still: nothing to do.
    redeclare = (lambda: _declare(settings, topics)) if settings.tansu else _nothing
    relay = OutboxRelay(
        store,
        pool,
        wiring.publish,
        schema=spec.name,
        poll_seconds=settings.relay_poll_seconds,
        prepare=redeclare,
        one_at_a_time=settings.tansu,
    )
    checkpoints = Checkpointer(
        pool,
        spec.name,
        keys.signer,
        settings.checkpoint_file(spec.name),
        wiring.publish_checkpoint,
        every=settings.checkpoint_seconds,
        prepare=redeclare,
    )
    runtime = Runtime(
        name=spec.name,
        settings=settings,
        protocol=protocol,
        pool=pool,
        store=store,
        idempotency=IdempotencyStore(pool, spec.name),
        relay=relay,
        broker=wiring.broker,
        broker_ready=broker_ready,
        consumers=consumers,
        lag=LagMonitor(relay, wiring.broker, settings.ready_lag_window_seconds),
        tokens=tokens,
        access=access,
        checkpoints=checkpoints,
    )
    sources = [(c, m.sources) for c, m in zip(consumers, spec.read_models, strict=True)]
    relay_task = asyncio.create_task(relay.run())
    tasks = [
        asyncio.create_task(_connect_broker(runtime, topics)),
        asyncio.create_task(_reconcile_forever(runtime, sources)),
        asyncio.create_task(runtime.lag.run()),
        asyncio.create_task(checkpoints.run()),
    ]
    log.info("%s service ready", spec.name)
    try:
        yield runtime
    finally:
        # Uvicorn has finished the requests in flight; let the relay finish its batch, then stop
        # the consumers (a message being handled is either committed with its offset, or redelivered).
        await relay.stop(relay_task)
        for task in tasks:
            task.cancel()
        # Every step is bounded: a client stuck on a dead peer (a broker that never answered) must not
        # keep the process from stopping.
        _, stuck = await asyncio.wait([*tasks, relay_task], timeout=SHUTDOWN_STEP_SECONDS)
        if stuck:
            log.warning(
                "%s: %d background task(s) did not stop within %g s; left behind",
                spec.name,
                len(stuck),
                SHUTDOWN_STEP_SECONDS,
            )
        try:
            await asyncio.wait_for(wiring.broker.stop(), SHUTDOWN_STEP_SECONDS)
        except TimeoutError:
            log.warning("%s: the Kafka clients did not stop within %g s", spec.name, SHUTDOWN_STEP_SECONDS)
        try:
            await asyncio.wait_for(pool.close(), SHUTDOWN_STEP_SECONDS)
        except TimeoutError:
            pool.terminate()
        store.close()
        access.close()


def build_app(spec: ServiceSpec, settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    _database_url(settings)  # fail at start, not at the first request
    _check_transport(settings)
    keys = service_keys(settings, spec)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(spec, settings, keys) as runtime:
            app.state.runtime = runtime  # what `shared.runtime.Rt` gives each handler
            yield

    app = FastAPI(title=f"UCAR-T {spec.title}", description=spec.description, version="0.1.0", lifespan=lifespan)
    problems.install(app)
    for router in spec.routers:
        app.include_router(router)
    app.include_router(grants_api.router)
    app.include_router(ops.router)
    return app


def serve(spec: ServiceSpec) -> None:
    import uvicorn

    settings = Settings()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {spec.name} %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        build_app(spec, settings),
        host=settings.host,
        port=settings.port(spec.name),
        log_level="info",
        timeout_graceful_shutdown=10,
    )
