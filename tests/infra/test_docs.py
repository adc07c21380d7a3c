"""The committed JSON Schemas and AsyncAPI documents are the ones the code generates."""

from __future__ import annotations

from infra import docs
from shared.contract.events import PAYLOADS


def test_committed_documents_match_the_code():
    generated = docs.generated()
    stale = [str(path.relative_to(docs.ROOT)) for path, text in generated.items()
             if not path.exists() or path.read_text() != text]
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
