"""The committed JSON Schemas and AsyncAPI documents are the ones the code generates."""

from __future__ import annotations

from infra import docs
from shared.contract.catalogue import PAYLOADS


def test_committed_documents_match_the_code():
    generated = docs.generated()
    stale = [
        str(path.relative_to(docs.ROOT))
        for path, text in generated.items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"run `make docs` and commit: {stale}"


def test_every_event_has_a_schema_and_every_service_an_asyncapi_document():
    names = {path.name for path in docs.generated()}
    assert {f"{t}.v{v}.json" for t, v in PAYLOADS} <= names
    assert {"enrollment.json", "treatment.json", "followup.json", "Envelope.json"} <= names


def test_asyncapi_documents_each_service_topic_with_the_envelope():
    documents = docs.asyncapi_documents()
    for service, document in documents.items():
        topic = f"ucart.{service.removesuffix('.json')}.events"
        published = [c for c in document["channels"].values() if c["address"] == topic and "publish" in str(c)]
        assert published, f"{service} does not document publishing to {topic}"
        assert "Envelope" in str(document["components"]["schemas"])


def test_asyncapi_documents_each_service_checkpoint_topic_with_the_checkpoint():
    for service, document in docs.asyncapi_documents().items():
        topic = f"ucart.{service.removesuffix('.json')}.checkpoints"
        published = [c for c in document["channels"].values() if c["address"] == topic and "publish" in str(c)]
        assert published, f"{service} does not document publishing to {topic}"
        assert {"Checkpoint", "Head"} <= set(document["components"]["schemas"])


def test_the_event_catalogue_describes_every_event_and_field():
    catalogue = (docs.ROOT / "docs" / "events.md").read_text()
    for (event_type, version), model in PAYLOADS.items():
        assert f"## {event_type}" in catalogue, f"docs/events.md has no section for {event_type}"
        assert f"events/{event_type}.v{version}.json" in catalogue
        section = catalogue.split(f"## {event_type}", 1)[1].split("\n## ", 1)[0]
        missing = [field for field in model.model_fields if f"`{field}" not in section]
        assert not missing, f"docs/events.md, {event_type}: fields not described: {missing}"


def test_a_published_event_schema_never_changes():
    published = docs.published_fingerprints()
    assert published, "docs/events/published.json is missing: run `make docs`"
    changed = [
        name
        for name, fingerprint in docs.schema_fingerprints().items()
        if name in published and published[name] != fingerprint
    ]
    assert not changed, (
        f"published schemas changed: {changed}. Restore them and publish the new shape as "
        "a new schema_version with an upcaster in shared/contract/upcasting.py."
    )
    assert set(published) <= set(docs.schema_fingerprints()), "a published event version was removed"


def test_the_catalogue_names_the_command_that_records_each_event():
    from services.enrollment.domain import COMMANDS as ENROLLMENT
    from services.followup.domain import COMMANDS as FOLLOWUP
    from services.treatment.domain import COMMANDS as TREATMENT

    catalogue = (docs.ROOT / "docs" / "events.md").read_text()
    for command in (*ENROLLMENT, *TREATMENT, *FOLLOWUP):
        section = catalogue.split(f"## {command.payload.event_type}\n", 1)[1].split("\n## ", 1)[0]
        route = f"`POST /subjects/{{subject_id}}/{command.route}`"
        assert route in section, f"docs/events.md, {command.payload.event_type}: say it is recorded by {route}"
