"""A stored event read as its envelope and its payload, each validated once.

The library's mapper rebuilds the domain event (validating the meta and the payload), `to_envelope` then
dumps the payload and validates an Envelope around it, and a reader validates the payload again to
upcast it: three validations and a dump per event, which dominated rebuilds and the relay. Here the
stored JSON is parsed once (no per-object hook), the envelope is validated from the stored meta and the
payload from its stored form, and the envelope carries the stored form itself (it is what the producer's
`model_dump(mode="json")` wrote). What the mapper would give, this gives (tests/shared/eventstore).
"""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Mapper

from shared.contract.envelope import Envelope
from shared.contract.events import Payload
from shared.contract.topics import Source
from shared.contract.upcasting import upcast
from shared.eventstore.application import META_NAME, PAYLOAD_NAMES


class UnreadableEvent(ValueError):
    """A stored event that is not what the services write (the caller parks it or reports it)."""


def decode(mapper: Mapper[UUID], source: Source, version: int, state: bytes) -> tuple[Envelope, Payload]:
    """The envelope of a stored event (its payload as stored) and its payload upcast to the latest version."""
    try:
        if mapper.cipher:
            state = mapper.cipher.decrypt(state)
        if mapper.compressor:
            state = mapper.compressor.decompress(state)
        stored = json.loads(state)
        meta, (name, data) = _typed(stored["meta"], META_NAME), _typed(stored["payload"])
        recorded_at = _typed(stored["timestamp"], "datetime_iso")[1]
        model = PAYLOAD_NAMES[name]
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableEvent(f"not an event the services write ({type(exc).__name__}: {exc})") from exc
    envelope = Envelope.model_validate(
        {
            **meta[1],
            "event_type": model.event_type,
            "schema_version": model.schema_version,
            "source": source,
            "stream_version": version,
            "recorded_at": recorded_at,
            "payload": data,
        }
    )
    return envelope, upcast(model.model_validate(data), envelope.occurred_at)


def _typed(value: Any, name: str | None = None) -> tuple[str, Any]:
    """A value the store's transcoder tagged (`{"_type_": name, "_data_": data}`), as (name, data)."""
    if not isinstance(value, dict) or value.keys() != {"_type_", "_data_"}:
        raise TypeError("a transcoded value was expected")
    if name is not None and value["_type_"] != name:
        raise ValueError(f"{value['_type_']} where {name} was expected")
    return value["_type_"], value["_data_"]
