"""Write side: `eventsourcing` applications on PostgreSQL whose events carry our pydantic models."""

from shared.eventstore.aggregate import SubjectStream, subject_uuid
from shared.eventstore.application import SubjectApplication, to_envelope
from shared.eventstore.meta import EventMeta

__all__ = ["EventMeta", "SubjectApplication", "SubjectStream", "subject_uuid", "to_envelope"]
