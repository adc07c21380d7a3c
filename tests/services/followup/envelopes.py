"""Envelopes for the follow-up projection tests: an event as a stream would have recorded it."""

from __future__ import annotations

from datetime import datetime
from uuid import uuid4

from shared.contract.envelope import Envelope, RecordedBy
from shared.contract.events import Payload
from shared.protocol import load_protocol

INVESTIGATOR = RecordedBy(user_id="inv-1", role="investigator")


def envelope(
    payload: Payload,
    occurred_at: datetime,
    *,
    subject_id: str,
    recorded_at: datetime | None = None,
    stream_version: int = 1,
    reason: str | None = None,
) -> Envelope:
    """`payload` recorded for `subject_id`, happened at `occurred_at` (recorded then, unless given)."""
    return Envelope(
        event_id=uuid4(),
        event_type=payload.event_type,
        schema_version=payload.schema_version,
        subject_id=subject_id,
        source=payload.source,
        stream_version=stream_version,
        occurred_at=occurred_at,
        recorded_at=recorded_at or occurred_at,
        recorded_by=INVESTIGATOR,
        correlation_id=uuid4(),
        reason=reason,
        protocol_version=load_protocol().version,
        payload=payload.model_dump(mode="json"),
    )
