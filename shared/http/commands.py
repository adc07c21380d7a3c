"""Command endpoints: POST a payload for a subject, get back the events recorded.

Every command has the same shape: the body is ``{occurred_at, reason?, payload}`` with the payload
model from the contract, the headers say who is acting (``X-User-Id``, ``X-User-Role``; the security
issue replaces them with authenticated identities), and an optional ``Idempotency-Key`` makes a retry
safe.
"""

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Generic, TypeVar
from uuid import UUID

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.envelope import Envelope, RecordedBy, SubjectId
from shared.contract.events import Payload
from shared.errors import InvalidCommand
from shared.eventstore.meta import EventMeta
from shared.http.idempotency import fingerprint
from shared.http.problems import PROBLEM_RESPONSES
from shared.time import now_utc

P = TypeVar("P", bound=Payload)
CLOCK_SKEW = timedelta(minutes=5)  # tolerated between a site's clock and ours


class CommandRequest(BaseModel, Generic[P]):
    model_config = ConfigDict(extra="forbid")

    occurred_at: AwareDatetime = Field(
        description="Clinical time, ISO 8601 with a UTC offset, e.g. 2026-03-02T09:30:00+01:00."
    )
    reason: str | None = Field(default=None, max_length=500, description="Why (required on corrections).")
    payload: P


class RecordedEvent(BaseModel):
    event_id: UUID
    event_type: str
    stream_version: int
    recorded_at: datetime
    payload: dict = Field(description="As stored, with defaults filled in (e.g. a generated ae_id).")


class CommandAccepted(BaseModel):
    subject_id: str
    correlation_id: UUID
    events: list[RecordedEvent]

    @classmethod
    def of(cls, subject_id: str, correlation_id: UUID, envelopes: list[Envelope]) -> "CommandAccepted":
        return cls(
            subject_id=subject_id,
            correlation_id=correlation_id,
            events=[RecordedEvent(event_id=e.event_id, event_type=e.event_type, stream_version=e.stream_version,
                                  recorded_at=e.recorded_at, payload=e.payload)
                    for e in envelopes],
        )


# run(runtime, meta, payload) -> the envelopes of the events recorded
UseCase = Callable[[Any, EventMeta, Any], Awaitable[list[Envelope]]]

SubjectPath = Annotated[SubjectId, Path(description="Pseudonymous study code, e.g. UCT-01-007")]


def add_command(router: APIRouter, path: str, payload: type[Payload], run: UseCase, *, summary: str) -> None:
    body_model = CommandRequest[payload]  # type: ignore[valid-type]

    async def endpoint(
        request: Request,
        subject_id: SubjectPath,
        body: body_model,  # type: ignore[valid-type]
        x_user_id: Annotated[str, Header(min_length=1, description="Who is entering the data.")],
        x_user_role: Annotated[str, Header(min_length=1, description="Their study role.")],
        x_correlation_id: Annotated[UUID | None, Header()] = None,
        x_causation_id: Annotated[UUID | None, Header()] = None,
        idempotency_key: Annotated[str | None, Header(min_length=8, max_length=200)] = None,
    ) -> JSONResponse:
        runtime = request.app.state.runtime
        if body.occurred_at > now_utc() + CLOCK_SKEW:
            raise InvalidCommand(f"occurred_at {body.occurred_at.isoformat()} is in the future; "
                                 "record events once they have happened, with their UTC offset.")
        meta_fields = dict(
            subject_id=subject_id,
            occurred_at=body.occurred_at,
            recorded_by=RecordedBy(user_id=x_user_id, role=x_user_role),
            causation_id=x_causation_id,
            reason=body.reason,
            protocol_version=runtime.protocol.version,
        )
        if x_correlation_id:
            meta_fields["correlation_id"] = x_correlation_id
        meta = EventMeta(**meta_fields)

        if idempotency_key:
            replay = await runtime.idempotency.claim(
                idempotency_key, fingerprint("POST", request.url.path, await request.body())
            )
            if replay is not None:
                status, stored = replay
                return JSONResponse(stored, status_code=status, headers={"Idempotent-Replayed": "true"})
        try:
            envelopes = await run(runtime, meta, body.payload)
        except BaseException:
            if idempotency_key:
                await runtime.idempotency.release(idempotency_key)
            raise
        runtime.relay_nudge()
        answer = CommandAccepted.of(subject_id, meta.correlation_id, envelopes).model_dump(mode="json")
        if idempotency_key:
            await runtime.idempotency.complete(idempotency_key, 201, answer)
        return JSONResponse(answer, status_code=201)

    router.post(
        path,
        status_code=201,
        summary=summary,
        description=(payload.__doc__ or "").strip(),
        response_model=CommandAccepted,
        responses=PROBLEM_RESPONSES,
        name=payload.event_type,
    )(endpoint)


__all__ = ["CommandAccepted", "CommandRequest", "SubjectPath", "add_command"]
