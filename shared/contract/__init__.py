"""The public event contract: envelope, payload models, topic names.

Other teams build on this package; a published payload never changes shape (a new shape is a new
``schema_version`` with an upcaster).
"""

from shared.contract.catalogue import PAYLOADS, payload_model
from shared.contract.envelope import Envelope, RecordedBy, SubjectId
from shared.contract.events import Payload
from shared.contract.topics import SOURCES, Source, dead_letter_topic, topic_for

__all__ = [
    "PAYLOADS",
    "SOURCES",
    "Envelope",
    "Payload",
    "RecordedBy",
    "Source",
    "SubjectId",
    "dead_letter_topic",
    "payload_model",
    "topic_for",
]
