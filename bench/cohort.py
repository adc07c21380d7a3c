"""Bulk generator: a large synthetic cohort written straight into the event stores.

Entering 100,000 events through HTTP takes hours. Here each subject's commands (the demo cohort's
journeys, `bench.journeys`) go through the services' own rules in this process, with the facts each
service would have learned from the others by then, so the events are those the services record (rule
events such as data queries included). They are encoded with the stores' mapper, chained per stream
as `ChainedRecorder` chains them, and written with COPY.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.persistence import Mapper

from bench.journeys import Journey, entry, journeys
from services.enrollment.domain import COMMANDS as ENROLLMENT_COMMANDS
from services.enrollment.main import SPEC as ENROLLMENT
from services.followup.domain import COMMANDS as FOLLOWUP_COMMANDS
from services.followup.main import SPEC as FOLLOWUP
from services.registry import READ_MODELS
from services.treatment.domain import COMMANDS as TREATMENT_COMMANDS
from services.treatment.main import SPEC as TREATMENT
from shared import db
from shared.commands import Command, Dependencies
from shared.contract.envelope import RecordedBy
from shared.contract.events import (
    ConsentWithdrawn,
    Enrolled,
    InfusionCorrected,
    LymphodepletionGiven,
    Payload,
    ScreenFailed,
    SubjectDied,
    UCARTInfused,
)
from shared.contract.topics import SOURCES, Source
from shared.eventstore import EventMeta, SubjectStream
from shared.eventstore.application import SubjectApplication, postgres_env, store_env, store_mapper
from shared.eventstore.chain import GENESIS, chain_hash
from shared.facts import SubjectFacts
from shared.protocol import Protocol, load_protocol
from shared.service import ServiceSpec

SPECS: dict[Source, ServiceSpec] = {s.name: s for s in (ENROLLMENT, TREATMENT, FOLLOWUP)}
COMMANDS: dict[Source, dict[str, Command]] = {
    "enrollment": {c.route: c for c in ENROLLMENT_COMMANDS},
    "treatment": {c.route: c for c in TREATMENT_COMMANDS},
    "followup": {c.route: c for c in FOLLOWUP_COMMANDS},
}
# Which sources each service's subject facts are learned from.
FACTS_FROM: dict[Source, tuple[Source, ...]] = {m.service: m.sources for m in READ_MODELS if m.kind == "subject-facts"}
USER = "bench-generator"

EventRow = tuple[UUID, int, str, bytes]  # originator_id, originator_version, topic, state
ChainRow = tuple[UUID, int, str]  # originator_id, originator_version, hash


def prepare_database(database_url: str) -> None:
    """Every table the services make at start (event stores with their chains, plumbing, read models),
    and the read models' versions, so that a service started on the generated stores does not rebuild."""

    async def ddl() -> None:
        conn = await db.connect(database_url)
        try:
            for name, spec in SPECS.items():
                await conn.execute(db.plumbing_ddl(name) + "".join(m.ddl(name) for m in spec.read_models))
                for model in spec.read_models:
                    await conn.execute(
                        f"""INSERT INTO {name}.projection_versions (projection, version) VALUES ($1, $2)
                            ON CONFLICT (projection) DO UPDATE SET version = EXCLUDED.version""",
                        model.consumer,
                        model.version,
                    )
        finally:
            await conn.close()

    asyncio.run(ddl())  # the schemas first: eventsourcing makes only its tables
    for name, spec in SPECS.items():
        SubjectApplication(spec.aggregate, name, postgres_env(database_url, name) | {"POSTGRES_POOL_SIZE": "1"}).close()


def learn(facts: SubjectFacts | None, subject_id: str, meta: EventMeta, payload: Payload) -> SubjectFacts:
    """What a service's subject-facts projection (`shared.facts`) keeps of one event."""
    known = (facts or SubjectFacts(subject_id=subject_id)).model_dump()
    day = meta.occurred_at.date()
    if payload.is_clinical_record():
        known["last_record_on"] = max(filter(None, (known["last_record_on"], day)))
    match payload:
        case Enrolled():
            known |= {"site_id": payload.site_id, "enrolled_on": day, "year_of_birth": payload.year_of_birth}
        case ScreenFailed():
            known |= {"site_id": payload.site_id, "screen_failed": True}
        case ConsentWithdrawn():
            known["withdrawn_on"] = day
        case LymphodepletionGiven():
            known["lymphodepleted_on"] = min(filter(None, (known["lymphodepleted_on"], day)))
        case UCARTInfused() | InfusionCorrected():
            known |= {"infused_at": meta.occurred_at, "infused_on": day}
        case SubjectDied():
            known["died_on"] = day
    return SubjectFacts(**known)


class Generator:
    """Turns journeys into stored-event rows and chain rows, per source."""

    def __init__(self, protocol: Protocol, today: date):
        self.protocol, self.today = protocol, today
        self.mappers: dict[Source, Mapper[UUID]] = {s: store_mapper(store_env(s)) for s in SOURCES}

    def rows(self, journey: Journey) -> dict[Source, tuple[list[EventRow], list[ChainRow]]]:
        streams: dict[Source, SubjectStream | None] = {}
        facts: dict[Source, SubjectFacts | None] = {}
        heads: dict[Source, str] = dict.fromkeys(SOURCES, GENESIS)
        out: dict[Source, tuple[list[EventRow], list[ChainRow]]] = {s: ([], []) for s in SOURCES}
        state = entry(journey, self.today)
        for step in journey.steps:
            command = COMMANDS[step.service][step.path]
            body = state.body(step)
            payload = command.payload.model_validate_json(json.dumps(body["payload"]))  # as the API reads it
            role = "data_manager" if step.path == "query-closures" else "investigator"
            meta = EventMeta(
                subject_id=journey.subject_id,
                occurred_at=datetime.fromisoformat(body["occurred_at"]),
                recorded_by=RecordedBy(user_id=USER, role=role, site_id=journey.site),
                reason=body["reason"],
                protocol_version=self.protocol.version,
            )
            rule = command.bind(Dependencies(facts=facts.get(step.service), protocol=self.protocol))
            subject = rule(streams.get(step.service), meta, payload)
            streams[step.service] = subject
            for pending in subject.collect_events():
                event = cast(SubjectStream.Recorded, pending)  # `Opened` carries the same meta and payload
                stored = self.mappers[step.service].to_stored_event(event)
                version = stored.originator_version
                heads[step.service] = chain_hash(
                    heads[step.service], stored.originator_id, version, stored.topic, stored.state
                )
                events, chain = out[step.service]
                originator = UUID(str(stored.originator_id))
                events.append((originator, version, stored.topic, bytes(stored.state)))
                chain.append((originator, version, heads[step.service]))
                state.learn(step, event.payload.event_type, event.payload.model_dump(mode="json"))
                for service, sources in FACTS_FROM.items():
                    if step.service in sources:
                        facts[service] = learn(facts.get(service), journey.subject_id, event.meta, event.payload)
        return out


async def write(
    database_url: str,
    events: int,
    prefix: str = "BULK",
    progress: Callable[[int], None] | None = None,
    flush_every: int = 20_000,
) -> dict[str, Any]:
    """At least `events` events (whole subjects) into the stores; returns the counts written."""
    generator = Generator(load_protocol(), datetime.now(UTC).date())
    conn = await db.connect(database_url)
    buffers: dict[Source, tuple[list[EventRow], list[ChainRow]]] = {s: ([], []) for s in SOURCES}
    written = subjects = pending = 0
    by_source = dict.fromkeys(SOURCES, 0)

    async def flush() -> None:
        for source, (rows, chain) in buffers.items():
            if rows:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        f"{source}_events",
                        schema_name=source,
                        columns=["originator_id", "originator_version", "topic", "state"],
                        records=rows,
                    )
                    await conn.copy_records_to_table(
                        f"{source}_events_chain",
                        schema_name=source,
                        columns=["originator_id", "originator_version", "hash"],
                        records=chain,
                    )
            rows.clear()
            chain.clear()

    try:
        for journey in journeys(prefix):
            if written >= events:
                break
            for source, (rows, chain) in generator.rows(journey).items():
                buffers[source][0].extend(rows)
                buffers[source][1].extend(chain)
                by_source[source] += len(rows)
                written += len(rows)
                pending += len(rows)
                if progress:
                    progress(len(rows))
            subjects += 1
            if pending >= flush_every:
                await flush()
                pending = 0
        await flush()
        for source in SOURCES:
            await conn.execute(f"ANALYZE {source}.{source}_events; ANALYZE {source}.{source}_events_chain")
    finally:
        await conn.close()
    return {"events": written, "subjects": subjects, "by_source": by_source}


def envelope_size(subjects: int = 16) -> int:
    """The mean size in bytes of our envelopes as the relay sends them (the demo cohort's mix)."""
    from shared.eventstore.reader import StoredRow

    generator = Generator(load_protocol(), datetime.now(UTC).date())
    sizes = []
    for journey, _ in zip(journeys("SIZE"), range(subjects), strict=False):
        for source, (rows, _chain) in generator.rows(journey).items():
            for originator, version, topic, state in rows:
                envelope = StoredRow(source, 0, originator, version, topic, state).envelope()
                sizes.append(len(envelope.model_dump_json()))
    return round(sum(sizes) / len(sizes))
