"""Command endpoints: POST a payload for a subject, get back the events recorded. One route per row
of a service's command table (`shared.commands.Command`).

Every command has the same shape: the body is ``{occurred_at, reason?, payload}`` with the payload
model from the contract, the bearer token says who is acting (the role and site come from their
grants, `shared/http/identity.py`), and an optional ``Idempotency-Key`` makes a retry safe.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, ClassVar, Generic, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from shared import facts
from shared.commands import Command, Dependencies
from shared.contract.envelope import Envelope, SubjectId
from shared.contract.events import Payload
from shared.contract.strict import ClientInput, IsoAwareDatetime
from shared.errors import InvalidCommand
from shared.eventstore.application import WITH_THE_EVENTS
from shared.eventstore.meta import EventMeta
from shared.http.idempotency import CREATED, fingerprint
from shared.http.identity import Permit, permit
from shared.http.inputs import CausationId, CorrelationId, IdempotencyKey
from shared.http.problems import PROBLEM_RESPONSES
from shared.runtime import Rt, Runtime
from shared.time import now_utc

P = TypeVar("P", bound=Payload)
CLOCK_SKEW = timedelta(minutes=5)  # tolerated between a site's clock and ours


class CommandRequest(ClientInput, Generic[P]):
    free_text: ClassVar[frozenset[str]] = frozenset({"reason"})

    occurred_at: IsoAwareDatetime = Field(
        description="Clinical time, ISO 8601 with a UTC offset, e.g. 2026-03-02T09:30:00+01:00."
    )
    reason: str | None = Field(default=None, max_length=500, description="Why (required on corrections).")
    payload: P


class RecordedEvent(BaseModel):
    event_id: UUID
    event_type: str
    stream_version: int
    recorded_at: datetime
    payload: dict[str, Any] = Field(description="As stored, with defaults filled in (e.g. a generated ae_id).")


class CommandAccepted(BaseModel):
    subject_id: str
    correlation_id: UUID
    events: list[RecordedEvent]

    @classmethod
    def of(cls, subject_id: str, correlation_id: UUID, envelopes: list[Envelope]) -> "CommandAccepted":
        return cls(
            subject_id=subject_id,
            correlation_id=correlation_id,
            events=[
                RecordedEvent(
                    event_id=e.event_id,
                    event_type=e.event_type,
                    stream_version=e.stream_version,
                    recorded_at=e.recorded_at,
                    payload=e.payload,
                )
                for e in envelopes
            ],
        )


SubjectPath = Annotated[SubjectId, Path(description="Pseudonymous study code, e.g. UCT-01-007")]


def _nothing_in_the_future(body: CommandRequest[Payload]) -> None:
    """A command records what has happened: no time in it (when, awareness, receipt, last contact...)
    may lie ahead. A date may be a day ahead of UTC: a site's local date at UTC+14."""
    latest = now_utc() + CLOCK_SKEW
    for where, value in _moments(body, ""):
        late = value > latest if isinstance(value, datetime) else value > (latest + timedelta(days=1)).date()
        if late:
            raise InvalidCommand(
                f"{where} {value.isoformat()} is in the future; record events once they have "
                "happened, with their UTC offset."
            )


def _moments(model: BaseModel, prefix: str) -> Iterator[tuple[str, date]]:
    for name, value in model:
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, date):  # and so a datetime
                yield f"{prefix}{name}", item
            elif isinstance(item, BaseModel):
                yield from _moments(item, f"{prefix}{name}.")


async def _record(
    rt: Runtime, command: Command, meta: EventMeta, payload: Payload, known: facts.SubjectFacts | None
) -> list[Envelope]:
    """Give the rule what it asks for, run it on the subject's stream (in a worker thread: the event
    store is synchronous) and commit what it raised."""
    rule = command.bind(Dependencies(facts=known, protocol=rt.protocol))
    return await asyncio.to_thread(rt.store.record, rule, meta, payload)


# Where a subject belongs, as this service knows it (None: not known here yet).
SiteOf = Callable[[Runtime, str], Awaitable[str | None]]


async def learned_site(rt: Runtime, subject_id: str) -> str | None:
    """The site as a service that learns enrolments from Kafka knows it (treatment, follow-up)."""
    return await facts.site_of(rt.pool, rt.schema, subject_id)


@dataclass(frozen=True)
class Retry:
    """What makes a request a retry of an earlier one: its idempotency key, and the same what and body."""

    key: str
    what: str  # e.g. the path and the person
    body: bytes


async def record_command(
    rt: Runtime,
    command: Command,
    allowed: Permit,
    subject_id: str,
    body: CommandRequest[Payload],
    site_of: SiteOf,
    retry: Retry | None = None,
    correlation_id: UUID | None = None,
    causation_id: UUID | None = None,
) -> tuple[int, dict[str, Any], bool]:
    """What a command does, for the API's endpoints and the dashboard's forms alike: nothing in the
    future, the subject's site (another site's subject: 404), the person's attribution, the rule, the
    events committed, the relay nudged. Returns the status, the answer, and whether it replays the
    answer to an earlier request with the same idempotency key (nothing new stored)."""
    _nothing_in_the_future(body)
    # A new subject's site is in the payload (enrolment, screening failure); else as known here, read
    # with the facts the rule gets: read apart, an enrolment learned in between recorded no site.
    known = await facts.load(rt.pool, rt.schema, subject_id) if "facts" in command.needs else None
    site = getattr(body.payload, "site_id", None) or (known and known.site_id) or await site_of(rt, subject_id)
    allowed.require(subject_id, site, retryable=site is None)
    meta_fields: dict[str, Any] = dict(
        subject_id=subject_id,
        occurred_at=body.occurred_at,
        recorded_by=allowed.recorded_by(site),
        causation_id=causation_id,
        reason=body.reason,
        protocol_version=rt.protocol.version,
    )
    if correlation_id:
        meta_fields["correlation_id"] = correlation_id
    meta = EventMeta(**meta_fields)

    def answer(envelopes: list[Envelope]) -> dict[str, Any]:
        return CommandAccepted.of(subject_id, meta.correlation_id, envelopes).model_dump(mode="json")

    token = None
    if retry:
        replay = await rt.idempotency.claim(retry.key, fingerprint("POST", retry.what, retry.body))
        if replay is not None:
            status, stored = replay
            return status, stored, True
        token = WITH_THE_EVENTS.set(rt.idempotency.answer_with_the_events(retry.key, answer))
    try:
        envelopes = await _record(rt, command, meta, body.payload, known)
    except BaseException:
        if retry:
            await rt.idempotency.release(retry.key)
        raise
    finally:
        if token is not None:
            WITH_THE_EVENTS.reset(token)
    rt.relay.nudge()
    return CREATED, answer(envelopes), False


def add_commands(router: APIRouter, commands: Iterable[Command], site_of: SiteOf) -> None:
    for command in commands:
        _add_command(router, command, site_of)


def _add_command(router: APIRouter, command: Command, site_of: SiteOf) -> None:
    payload = command.payload
    body_model = CommandRequest[payload]  # type: ignore[valid-type]  # a model made at run time
    Allowed = Annotated[Permit, Depends(permit(command.action))]

    async def endpoint(
        request: Request,
        rt: Rt,
        subject_id: SubjectPath,
        body: body_model,
        allowed: Allowed,
        x_correlation_id: CorrelationId = None,
        x_causation_id: CausationId = None,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        retry = None
        if idempotency_key:  # the caller is part of the request: another person's key and body are not a retry
            retry = Retry(idempotency_key, f"{request.url.path} {allowed.user_id}", await request.body())
        status, answer, replayed = await record_command(
            rt, command, allowed, subject_id, body, site_of, retry, x_correlation_id, x_causation_id
        )
        return JSONResponse(answer, status_code=status, headers={"Idempotent-Replayed": "true"} if replayed else None)

    router.post(
        f"/subjects/{{subject_id}}/{command.route}",
        status_code=201,
        summary=command.summary,
        description=(payload.__doc__ or "").strip(),
        response_model=CommandAccepted,
        responses=PROBLEM_RESPONSES,
        name=payload.event_type,
    )(endpoint)


__all__ = ["CommandAccepted", "CommandRequest", "Retry", "SubjectPath", "add_commands", "record_command"]
