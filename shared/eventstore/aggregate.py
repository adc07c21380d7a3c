"""One aggregate per subject per service, whose events are our public payloads.

Every stored event is either `Opened` (the stream's first) or `Recorded`, and carries an `EventMeta`
and one payload model from `shared.contract.events`. The payload *is* the event type: there is one
catalogue of events (the contract), not a second one of aggregate event classes. Subclasses
implement `when()`, which only changes state; the rules live in the services' command functions,
which run before anything is recorded.
"""

from __future__ import annotations

from typing import Self
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from shared.contract.events import Payload
from shared.contract.upcasting import upcast
from shared.eventstore.meta import EventMeta

_SUBJECT_NAMESPACE = uuid5(NAMESPACE_URL, "urn:ucart:subject")


def subject_uuid(subject_id: str) -> UUID:
    """Stream id of a subject: derived from the study code, so a code can only be opened once."""
    return uuid5(_SUBJECT_NAMESPACE, subject_id)


class SubjectStream(Aggregate):
    class Opened(Aggregate.Created):
        meta: EventMeta
        payload: Payload

    class Recorded(Aggregate.Event):
        meta: EventMeta
        payload: Payload

        def apply(self, aggregate: SubjectStream) -> None:
            aggregate.when(self.meta, upcast(self.payload, self.meta.occurred_at))

    def __init__(self, meta: EventMeta, payload: Payload):
        self.subject_id = meta.subject_id
        self.initialise()
        self.when(meta, upcast(payload, meta.occurred_at))

    def initialise(self) -> None:
        """Set the state a new stream starts from."""

    def when(self, meta: EventMeta, payload: Payload) -> None:
        """Change state for one event (payloads arrive upcast to their latest version)."""
        raise NotImplementedError

    @classmethod
    def record_into(cls, subject: Self | None, meta: EventMeta, payload: Payload) -> Self:
        """Record the event: open the subject's stream with it, or append it to the stream."""
        if subject is None:
            return cls._create(cls.Opened, id=subject_uuid(meta.subject_id), meta=meta, payload=payload)
        subject.trigger_event(cls.Recorded, meta=meta, payload=payload)
        return subject
