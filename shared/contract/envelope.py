"""The JSON envelope every event travels in (DESIGN.md, "The event contract")."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from pydantic import Field, StringConstraints

from shared.contract.catalogue import payload_model
from shared.contract.events import Payload
from shared.contract.strict import ContractModel, IsoAwareDatetime
from shared.contract.topics import Source

SubjectId = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Z0-9]+(-[A-Z0-9]+)+$", min_length=4, max_length=32),
    Field(
        description="Pseudonymous study code such as UCT-01-007 (uppercase letters, digits, dashes). "
        "Never a name or any other direct identifier.",
        examples=["UCT-01-007"],
    ),
]


class RecordedBy(ContractModel):
    """Who entered the data (ALCOA+: attributable)."""

    user_id: str = Field(min_length=1, max_length=128)
    role: str = Field(min_length=1, max_length=64)
    site_id: str | None = Field(
        default=None,
        max_length=8,
        description="The site the person acted for, from their grant (none for the rules engine, study-wide "
        "roles and events recorded before identities were verified).",
    )


class Envelope(ContractModel):
    """One event as published on Kafka. ``payload`` is validated against its model by
    :meth:`typed_payload`, so a consumer sees exactly the model the producer stored."""

    event_id: UUID
    event_type: str
    schema_version: int = Field(ge=1)
    subject_id: SubjectId
    source: Source
    stream_version: int = Field(ge=1, description="Position in the subject's stream at the source, from 1.")
    occurred_at: IsoAwareDatetime = Field(description="Clinical time: when it happened.")
    recorded_at: IsoAwareDatetime = Field(description="System time (UTC): when it was stored.")
    recorded_by: RecordedBy
    correlation_id: UUID
    causation_id: UUID | None = None
    reason: str | None = Field(default=None, description="Why; required on corrections.")
    protocol_version: str = Field(description="Version of the protocol file the rules were checked against.")
    payload: dict[str, Any]

    def typed_payload(self) -> Payload:
        return payload_model(self.event_type, self.schema_version).model_validate(self.payload)

    def kafka_key(self) -> bytes:
        return self.subject_id.encode()

    def kafka_headers(self) -> dict[str, str]:
        return {
            "event_type": self.event_type,
            "event_id": str(self.event_id),
            "schema_version": str(self.schema_version),
            "correlation_id": str(self.correlation_id),
        }
