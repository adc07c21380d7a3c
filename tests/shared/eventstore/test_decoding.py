"""Decoding a stored event once gives what the library's mapper and `to_envelope` give, for every payload
the catalogue ever published, with and without the store's cipher and compressor."""

from datetime import UTC, datetime
from typing import cast

import pytest
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import StoredEvent
from pydantic import ValidationError

from shared.contract.envelope import RecordedBy
from shared.contract.events import AEReported, Payload
from shared.contract.upcasting import upcast
from shared.eventstore import EventMeta, SubjectStream
from shared.eventstore.application import store_env, store_mapper, to_envelope
from shared.eventstore.decoding import UnreadableEvent, decode
from tests.shared.test_contract import EXAMPLES

PLAIN: dict[str, str] = {}
SEALED = {
    "CIPHER_TOPIC": "eventsourcing.cryptography:AESCipher",
    "CIPHER_KEY": AESCipher.create_key(16),
    "COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor",
}


class Stream(SubjectStream):
    def when(self, meta: EventMeta, payload: Payload) -> None:
        pass


def stored_pair(payload: Payload, env: dict[str, str]) -> list[StoredEvent]:
    """The stream's opening event and a later one, both carrying `payload`, as the store holds them."""
    meta = EventMeta(
        subject_id="UCT-01-007",
        occurred_at=datetime(2025, 3, 14, 9, 30, tzinfo=UTC),
        recorded_by=RecordedBy(user_id="inv-1", role="investigator", site_id="01"),
        reason="why not",
        protocol_version="UCART19-BALL-01@1.3",
    )
    subject = Stream.record_into(None, meta, payload)
    Stream.record_into(subject, meta, payload)
    mapper = store_mapper(store_env("followup", env))
    return [mapper.to_stored_event(event) for event in subject.collect_events()]


@pytest.mark.parametrize("env", [PLAIN, SEALED], ids=["plain", "ciphered and compressed"])
@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda m: m.__name__)
def test_a_stored_event_decodes_as_the_mapper_reads_it(model, env):
    mapper = store_mapper(store_env("followup", env))
    for stored in stored_pair(EXAMPLES[model], env):
        domain_event = cast(SubjectStream.Recorded, mapper.to_domain_event(stored))
        envelope, payload = decode(mapper, "followup", stored.originator_version, stored.state)
        assert envelope == to_envelope(domain_event, "followup")
        assert envelope.model_dump_json() == to_envelope(domain_event, "followup").model_dump_json()
        assert payload == upcast(domain_event.payload, domain_event.meta.occurred_at)
        assert type(payload).schema_version == max(
            m.schema_version for m in EXAMPLES if m.event_type == model.event_type
        )


def test_an_event_stored_before_the_text_rules_still_decodes():
    garbled = AEReported.model_construct(**(EXAMPLES[AEReported].__dict__ | {"term": "Rash\x00"}))
    stored = stored_pair(garbled, PLAIN)[1]
    _, payload = decode(store_mapper(store_env("followup")), "followup", 2, stored.state)
    assert isinstance(payload, AEReported) and payload.term == "Rash\x00"


@pytest.mark.parametrize(
    "state, says",
    [
        (b"not json", "JSONDecodeError"),
        (b"[]", "TypeError"),
        (b'{"meta": {"_type_": "ucart.EventMeta", "_data_": {}}}', "KeyError"),
        (
            b'{"timestamp": {"_type_": "datetime_iso", "_data_": "2025-03-14T09:30:00+00:00"}, '
            b'"meta": {"_type_": "ucart.EventMeta", "_data_": {}}, '
            b'"payload": {"_type_": "ucart.Teleported.v1", "_data_": {}}}',
            "ucart.Teleported.v1",
        ),
        (
            b'{"timestamp": {"_type_": "datetime_iso", "_data_": "2025-03-14T09:30:00+00:00"}, '
            b'"meta": {"_type_": "ucart.Other", "_data_": {}}, '
            b'"payload": {"_type_": "ucart.SubjectDied.v1", "_data_": {}}}',
            "ucart.Other where ucart.EventMeta",
        ),
    ],
    ids=["not JSON", "not an object", "no payload", "unknown payload", "not our meta"],
)
def test_a_row_the_services_did_not_write_is_unreadable_and_says_why(state, says):
    with pytest.raises(UnreadableEvent, match=says):
        decode(store_mapper(store_env("followup")), "followup", 1, state)


def test_a_stored_payload_that_breaks_its_model_is_refused():
    stored = stored_pair(EXAMPLES[AEReported], PLAIN)[1]
    broken = stored.state.replace(b'"grade":3', b'"grade":"three"')
    assert broken != stored.state
    with pytest.raises(ValidationError, match="grade"):
        decode(store_mapper(store_env("followup")), "followup", 2, broken)
