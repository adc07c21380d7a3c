"""The public event contract: payload models, the envelope, and the event catalogue."""

from datetime import UTC, date, datetime
from uuid import uuid4

import pytest
from pydantic import TypeAdapter, ValidationError

from shared.contract import PAYLOADS, Envelope, RecordedBy, SubjectId, payload_model
from shared.contract.events import (
    AEReported,
    AgentDose,
    ConsentWithdrawn,
    Enrolled,
    LymphodepletionGiven,
    Payload,
    ResponseAssessed,
    ScreenFailed,
    SubjectDied,
    UCARTInfused,
    UnknownEventType,
    VisitCompleted,
)
from shared.eventstore import EventMeta

FLU = AgentDose(agent="fludarabine", dose=30, unit="mg/m2")
EXAMPLES: dict[type[Payload], Payload] = {
    Enrolled: Enrolled(site_id="01", consent_signed_on=date(2025, 3, 1), year_of_birth=1980, sex="U",
                       disease_status="relapsed", cd19_positive=True),
    ScreenFailed: ScreenFailed(site_id="01", failure_reason="CD19 negative"),
    ConsentWithdrawn: ConsentWithdrawn(withdrawal_reason="moved away"),
    LymphodepletionGiven: LymphodepletionGiven(agents=(FLU, AgentDose(agent="cyclophosphamide", dose=500,
                                                                      unit="mg/m2"))),
    UCARTInfused: UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="LOT-1", donor_id="D-1"),
    AEReported: AEReported(term="CRS", category="CRS", grade=2, serious=False, relatedness="possible"),
    ResponseAssessed: ResponseAssessed(timepoint="W4", response="CR", marrow_blasts_pct=1.5, mrd_negative=True),
    VisitCompleted: VisitCompleted(visit_code="RESP_W4"),
    SubjectDied: SubjectDied(primary_cause="unknown"),
}


def envelope(payload: Payload, **changes) -> Envelope:
    fields = dict(
        event_id=uuid4(), event_type=payload.event_type, schema_version=payload.schema_version,
        subject_id="UCT-01-007", source=payload.source, stream_version=3,
        occurred_at=datetime(2025, 3, 12, 10, 30, tzinfo=UTC), recorded_at=datetime(2025, 3, 12, 11, tzinfo=UTC),
        recorded_by=RecordedBy(user_id="inv-1", role="investigator"), correlation_id=uuid4(),
        causation_id=uuid4(), reason=None, protocol_version="UCART19-BALL-01@1.0",
        payload=payload.model_dump(mode="json"),
    )
    return Envelope(**(fields | changes))


def test_every_published_payload_has_an_example():
    assert set(PAYLOADS.values()) == set(EXAMPLES)


@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda m: m.__name__)
def test_payloads_are_frozen(model):
    example = EXAMPLES[model]
    field = next(iter(model.model_fields))
    with pytest.raises(ValidationError, match="frozen"):
        setattr(example, field, getattr(example, field))


@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda m: m.__name__)
def test_payloads_forbid_extra_fields(model):
    data = EXAMPLES[model].model_dump(mode="json")
    assert model.model_validate(data) == EXAMPLES[model]
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate(data | {"patient_name": "John Smith"})


@pytest.mark.parametrize("model", list(EXAMPLES), ids=lambda m: m.__name__)
def test_envelope_round_trips_through_json(model):
    original = envelope(EXAMPLES[model])
    received = Envelope.model_validate_json(original.model_dump_json())
    assert received == original
    typed = received.typed_payload()
    assert type(typed) is model and typed == EXAMPLES[model]


def test_envelope_is_frozen_and_forbids_extra_fields():
    original = envelope(EXAMPLES[Enrolled])
    with pytest.raises(ValidationError):
        original.stream_version = 4
    with pytest.raises(ValidationError, match="Extra inputs"):
        Envelope.model_validate(original.model_dump(mode="json") | {"topic": "x"})


def test_envelope_times_must_be_timezone_aware():
    with pytest.raises(ValidationError, match="timezone"):
        envelope(EXAMPLES[Enrolled], occurred_at=datetime(2025, 3, 12, 10))


def test_typed_payload_validates_the_payload_against_its_model():
    ae = EXAMPLES[AEReported]
    broken = Envelope.model_validate(envelope(ae).model_dump(mode="json") | {"payload": ae.model_dump() | {"grade": 7}})
    with pytest.raises(ValidationError, match="grade"):
        broken.typed_payload()


@pytest.mark.parametrize(("event_type", "version"), [("PatientRenamed", 1), ("Enrolled", 2), ("enrolled", 1)])
def test_unknown_event_type_or_version(event_type, version):
    with pytest.raises(UnknownEventType, match=f"unknown event {event_type} v{version}; known: .*Enrolled v1"):
        payload_model(event_type, version)
    with pytest.raises(UnknownEventType):
        envelope(EXAMPLES[Enrolled], event_type=event_type, schema_version=version).typed_payload()


def test_payload_model_finds_each_published_model():
    for (event_type, version), model in PAYLOADS.items():
        assert payload_model(event_type, version) is model
        assert (model.event_type, model.schema_version) == (event_type, version)


@pytest.mark.parametrize("code", ["John Smith", "john-smith", "JOHN SMITH", "UCT01007", "UCT-01-", "A-1",
                                  "UCT-01-007-" + "9" * 30, "Smith-John"])
def test_subject_id_rejects_names_and_malformed_codes(code):
    with pytest.raises(ValidationError):
        TypeAdapter(SubjectId).validate_python(code)
    with pytest.raises(ValidationError, match="subject_id"):
        envelope(EXAMPLES[Enrolled], subject_id=code)
    with pytest.raises(ValidationError, match="subject_id"):
        EventMeta(subject_id=code, occurred_at=datetime(2025, 3, 12, tzinfo=UTC),
                  recorded_by=RecordedBy(user_id="u", role="r"), protocol_version="p")


@pytest.mark.parametrize("code", ["UCT-01-007", "SITE2-0001", "AB-1"])
def test_subject_id_accepts_study_codes(code):
    assert TypeAdapter(SubjectId).validate_python(code) == code


@pytest.mark.parametrize("response", ["CR", "CRi"])
def test_remission_needs_marrow_blasts_below_5_percent(response):
    assert ResponseAssessed(timepoint="W4", response=response, marrow_blasts_pct=4.99).response == response
    with pytest.raises(ValidationError, match=f"{response} needs marrow blasts < 5%"):
        ResponseAssessed(timepoint="W4", response=response, marrow_blasts_pct=5)


def test_no_response_may_have_any_blast_count():
    assert ResponseAssessed(timepoint="W8", response="NR", marrow_blasts_pct=80).marrow_blasts_pct == 80


@pytest.mark.parametrize("response", ["CR", "CRi", "NR"])
def test_cd19_status_only_for_a_relapse(response):
    with pytest.raises(ValidationError, match="cd19_status is recorded only for a RELAPSE"):
        ResponseAssessed(timepoint="W8", response=response, marrow_blasts_pct=1, cd19_status="CD19-")
    relapse = ResponseAssessed(timepoint="W8", response="RELAPSE", marrow_blasts_pct=30, cd19_status="CD19-")
    assert relapse.cd19_status == "CD19-"


@pytest.mark.parametrize("blasts", [-0.1, 100.1])
def test_marrow_blasts_is_a_percentage(blasts):
    with pytest.raises(ValidationError, match="marrow_blasts_pct"):
        ResponseAssessed(timepoint="W4", response="NR", marrow_blasts_pct=blasts)


def test_lymphodepletion_refuses_the_same_agent_twice_in_a_day():
    with pytest.raises(ValidationError, match="each agent may appear once per day"):
        LymphodepletionGiven(agents=(FLU, AgentDose(agent="fludarabine", dose=10, unit="mg/m2")))


def test_lymphodepletion_needs_at_least_one_agent():
    with pytest.raises(ValidationError, match="agents"):
        LymphodepletionGiven(agents=())
