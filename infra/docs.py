"""Generated documents: JSON Schema of every event (docs/events/) and AsyncAPI per service
(docs/asyncapi/). `make docs` writes them; a test fails when the committed copies are stale."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from shared.config import Settings
from shared.contract.catalogue import PAYLOADS
from shared.contract.envelope import Envelope

ROOT = Path(__file__).resolve().parent.parent


def event_schemas() -> dict[str, dict[str, Any]]:
    files = {"Envelope.json": Envelope.model_json_schema()}
    for (event_type, version), model in sorted(PAYLOADS.items()):
        schema = model.model_json_schema()
        schema["x-event-type"], schema["x-schema-version"], schema["x-source"] = event_type, version, model.source
        files[f"{event_type}.v{version}.json"] = schema
    return files


def asyncapi_documents() -> dict[str, dict[str, Any]]:
    from services.enrollment.main import SPEC as enrollment
    from services.followup.main import SPEC as followup
    from services.treatment.main import SPEC as treatment
    from shared.service import asyncapi

    settings = Settings(_env_file=None, kafka_bootstrap_servers="localhost:9092", topic_prefix="")
    return {
        f"{spec.name}.json": asyncapi(spec, settings).to_specification().to_jsonable()
        for spec in (enrollment, treatment, followup)
    }


PUBLISHED = ROOT / "docs" / "events" / "published.json"


def schema_fingerprints() -> dict[str, str]:
    """sha256 of each event version's JSON Schema: once published, a version never changes."""
    return {
        name: hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()
        for name, schema in event_schemas().items()
        if name != "Envelope.json"
    }


def published_fingerprints() -> dict[str, str]:
    return json.loads(PUBLISHED.read_text()) if PUBLISHED.exists() else {}


def generated() -> dict[Path, str]:
    out = {}
    for name, schema in event_schemas().items():
        out[ROOT / "docs" / "events" / name] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    for name, doc in asyncapi_documents().items():
        out[ROOT / "docs" / "asyncapi" / name] = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    # New versions join the published list; a published entry is never rewritten (a test holds it).
    out[PUBLISHED] = json.dumps(schema_fingerprints() | published_fingerprints(), indent=2, sort_keys=True) + "\n"
    return out


def write() -> list[Path]:
    files = generated()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return list(files)
