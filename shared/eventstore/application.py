"""The `eventsourcing` Application every service's write side builds on."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    IntegrityError,
    JSONTranscoder,
    Mapper,
    OperationalError,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.popo import POPOFactory
from eventsourcing.utils import Environment
from pydantic import BaseModel

from shared.contract.catalogue import ALL as ALL_PAYLOADS
from shared.contract.envelope import Envelope
from shared.contract.events import Payload
from shared.contract.topics import Source
from shared.errors import ConcurrentChange
from shared.eventstore import factory
from shared.eventstore.aggregate import SubjectStream, subject_uuid
from shared.eventstore.meta import EventMeta
from shared.transport import postgres_tls

S = TypeVar("S", bound=SubjectStream)

# A statement and its parameters (psycopg style).
Write = tuple[str, Sequence[Any]]

# Writes the caller wants committed in the same transaction as the events, computed from them (an
# HTTP request's idempotent answer: it is stored exactly when the events are). A context variable
# because it belongs to the request, not to the use case; `asyncio.to_thread` carries it along.
WITH_THE_EVENTS: ContextVar[Callable[[list[Envelope]], list[Write]] | None] = ContextVar(
    "WITH_THE_EVENTS", default=None
)


class PydanticTranscoding(Transcoding):
    """Stores a pydantic model as its JSON form under a stable name, and validates it on the way back."""

    def __init__(self, model: type[BaseModel], name: str):
        self.type: type[BaseModel] = model
        self.name = name

    def encode(self, obj: BaseModel) -> Any:
        return obj.model_dump(mode="json")

    def decode(self, data: Any) -> BaseModel:
        return self.type.model_validate(data)


# The names our models are stored under: never change one (stored events name them).
META_NAME = "ucart.EventMeta"
PAYLOAD_NAMES: dict[str, type[Payload]] = {f"ucart.{m.event_type}.v{m.schema_version}": m for m in ALL_PAYLOADS}


def register_transcodings(transcoder: JSONTranscoder) -> None:
    """eventsourcing's own (UUID, Decimal, datetime) and one per model we store, under stable names."""
    meta = PydanticTranscoding(EventMeta, META_NAME)
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), meta):
        transcoder.register(transcoding)
    for name, model in PAYLOAD_NAMES.items():
        transcoder.register(PydanticTranscoding(model, name))


def postgres_env(database_url: str, schema: str) -> dict[str, str]:
    """`eventsourcing`'s POSTGRES_* settings from a DATABASE_URL (a socket directory goes in ?host=), with
    its TLS parameters (sslmode...), checked."""
    url = urlsplit(database_url)
    query = parse_qs(url.query)
    host = query.get("host", [url.hostname or "127.0.0.1"])[0]
    tls = {factory.tls_setting(p): value for p, value in postgres_tls(database_url).libpq.items()}
    return {
        "PERSISTENCE_MODULE": factory.TOPIC,
        "POSTGRES_DBNAME": unquote(url.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(url.port or query.get("port", ["5432"])[0]),
        "POSTGRES_USER": unquote(url.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(url.password or ""),
        "POSTGRES_SCHEMA": schema,
        # How long to wait for a pooled connection. eventsourcing tries every read and write 10 times,
        # so this bounds how long a command waits before answering 503 when PostgreSQL is down
        # (10 x 5 s was longer than clients wait).
        "POSTGRES_CONNECT_TIMEOUT": "1",
        "POSTGRES_POOL_SIZE": "4",
        # No ping before each use of a pooled connection (two round trips a command): a connection
        # PostgreSQL dropped fails its statement, the pool discards it and eventsourcing retries.
        "APPLICATION_RECORDER_TOPIC": "shared.eventstore.chain:ChainedRecorder",  # tamper evidence
        **tls,
    }


def envelope_of(
    meta: EventMeta, payload: Payload, *, source: Source, stream_version: int, recorded_at: datetime
) -> Envelope:
    return Envelope(
        event_id=meta.event_id,
        event_type=payload.event_type,
        schema_version=payload.schema_version,
        subject_id=meta.subject_id,
        source=source,
        stream_version=stream_version,
        occurred_at=meta.occurred_at,
        recorded_at=recorded_at,
        recorded_by=meta.recorded_by,
        correlation_id=meta.correlation_id,
        causation_id=meta.causation_id,
        reason=meta.reason,
        protocol_version=meta.protocol_version,
        payload=payload.model_dump(mode="json"),
    )


def to_envelope(domain_event: Any, source: Source) -> Envelope:
    return envelope_of(
        domain_event.meta,
        domain_event.payload,
        source=source,
        stream_version=domain_event.originator_version,
        recorded_at=domain_event.timestamp,
    )


def store_mapper(env: Environment) -> Mapper[UUID]:
    """How a service's stored events are encoded: our transcodings, and the cipher and compressor the
    environment configures (CIPHER_TOPIC, CIPHER_KEY, COMPRESSOR_TOPIC). The application writes with it,
    and everything that reads a store directly decodes with it."""
    transcoder = JSONTranscoder()
    register_transcodings(transcoder)
    return POPOFactory(env).mapper(transcoder=transcoder)  # builds no recorder: only reads `env`


def store_env(source: Source, env: Mapping[str, str] | None = None) -> Environment:
    """The environment a service's store is configured from, as eventsourcing builds it."""
    return Environment(source, {**os.environ, **(env or {})})


class SubjectApplication(Application[UUID], Generic[S]):
    """One service's event store: one stream per subject, of `aggregate`, in `<source>.<source>_events`.

    Synchronous (psycopg): call its methods from a worker thread, never on the event loop.
    """

    def __init__(self, aggregate: type[S], source: Source, env: Mapping[str, str] | None = None):
        self.aggregate, self.source = aggregate, source
        self.name = source  # eventsourcing names the tables and reads prefixed settings from it
        super().__init__(dict(env or {}))
        # psycopg's pool retries a lost server with a growing back-off (minutes between tries in the
        # end), so it could serve again long after PostgreSQL is back. Give a lost connection up after
        # a second instead: the pool then grows afresh on the next request.
        self.recorder.datastore.pool.reconnect_timeout = 1.0  # type: ignore[attr-defined]  # the postgres recorder has one

    def construct_mapper(self) -> Mapper[UUID]:
        return store_mapper(Environment(self.name, self.env))

    def find(self, subject_id: str) -> S | None:
        try:
            subject: SubjectStream = self.repository.get(subject_uuid(subject_id))
        except AggregateNotFoundError:
            return None
        if not isinstance(subject, self.aggregate):
            raise TypeError(f"{subject_id}'s stream in {self.source} is a {type(subject).__name__}")
        return subject

    def record(
        self, rule: Callable[[S | None, EventMeta, Payload], SubjectStream], meta: EventMeta, payload: Payload
    ) -> list[Envelope]:
        """Run a rule on the subject's current state and commit the events it raised."""
        return self.commit(rule(self.find(meta.subject_id), meta, payload))

    def commit(self, subject: SubjectStream) -> list[Envelope]:
        """Save the subject's new events; a concurrent writer (same stream version) gets a 409."""
        loaded_at = subject.version - len(subject.pending_events)
        concurrent = ConcurrentChange(
            f"Subject {subject.subject_id} was changed by another request at the same time; reload it and try again."
        )
        writes = WITH_THE_EVENTS.get()
        also = writes([to_envelope(e, self.source) for e in subject.pending_events]) if writes else []
        try:
            recordings = self.save(subject, also=also)  # ChainedRecorder runs `also` in the insert transaction
        except IntegrityError:
            raise concurrent from None
        except OperationalError:
            # eventsourcing inserts in a psycopg pipeline, which sometimes reports the unique violation
            # of a concurrent writer as "pipeline aborted" (an OperationalError, so a 503): if the
            # stream moved past the version this save started from, the save lost that race.
            if self.recorder.select_events(subject.id, gt=loaded_at, limit=1):
                raise concurrent from None
            raise
        return [to_envelope(r.domain_event, self.source) for r in recordings]
