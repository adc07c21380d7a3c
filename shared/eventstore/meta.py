"""Who, when, why: the part of the envelope decided when a command is accepted."""

from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.envelope import RecordedBy, SubjectId


class EventMeta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: UUID = Field(default_factory=uuid4)
    subject_id: SubjectId
    occurred_at: AwareDatetime
    recorded_by: RecordedBy
    correlation_id: UUID = Field(default_factory=uuid4)
    causation_id: UUID | None = None
    reason: str | None = None
    protocol_version: str
