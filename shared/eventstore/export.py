"""A subject's audit export, and how anyone with the public keys and the checkpoints checks it.

The history's formats give each event's envelope: what a reader needs, not what the chain hashed. The
audit export (JSON Lines: a header, then one line per event in recorded order) also gives, per event,
its stored row (source, stream, version, topic, the stored state in base64) and its chain hash. With
it an outsider recomputes each of the subject's streams from genesis, sees that every envelope is
what its stored row says, and compares the recomputed hashes with the heads the services signed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.contract.checkpoint import ChainHash, Checkpoint
from shared.contract.topics import SOURCES, Source
from shared.eventstore.aggregate import subject_uuid
from shared.eventstore.chain import GENESIS, chain_hash, stream_hashes
from shared.eventstore.reader import StoredRow, stream_rows

FORMAT = "ucart-audit-export/1"


class ExportHeader(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["ucart-audit-export/1"]
    subject_id: str
    exported_at: AwareDatetime


class ExportedEvent(BaseModel):
    """One event: its envelope (as the history gives it) and the row its store holds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Source
    stream_id: UUID
    version: int = Field(ge=1)
    notification_id: int
    topic: str
    state: str = Field(description="The stored bytes, base64.")
    chain_hash: ChainHash | None = Field(description="None: stored before the chain existed.")
    envelope: dict[str, Any]

    def stored(self) -> StoredRow:
        return StoredRow(
            self.source,
            self.notification_id,
            self.stream_id,
            self.version,
            self.topic,
            base64.b64decode(self.state, validate=True),
        )


async def export_lines(conn: asyncpg.Connection, subject_id: str, exported_at: datetime) -> list[str]:
    """The subject's audit export, a JSON document a line; none if the subject has no events."""
    stream = subject_uuid(subject_id)
    events = []
    for source in SOURCES:
        hashes = await stream_hashes(conn, source, stream)
        for row in await stream_rows(conn, source, stream, 0):
            envelope = row.envelope()
            state = base64.b64encode(row.state).decode()
            exported = ExportedEvent(
                source=source,
                stream_id=stream,
                version=row.version,
                notification_id=row.notification_id,
                topic=row.topic,
                state=state,
                chain_hash=hashes.get(row.version),
                envelope=envelope.model_dump(mode="json"),
            )
            events.append((envelope.recorded_at, SOURCES.index(source), row.version, exported))
    if not events:
        return []
    header = ExportHeader(format=FORMAT, subject_id=subject_id, exported_at=exported_at)
    return [header.model_dump_json()] + [e.model_dump_json() for *_, e in sorted(events, key=lambda e: e[:3])]


@dataclass(frozen=True)
class Export:
    header: ExportHeader
    events: list[ExportedEvent]

    @property
    def stream_id(self) -> UUID:
        return subject_uuid(self.header.subject_id)


def read_export(lines: Iterable[str]) -> Export:
    """An audit export as written by `export_lines`; ValueError names what cannot be read."""
    found = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not found:
        raise ValueError("the export is empty")
    try:
        header = ExportHeader.model_validate_json(found[0][1])
        return Export(header, [ExportedEvent.model_validate_json(line) for _, line in found[1:]])
    except ValidationError as exc:
        error = exc.errors()[0]
        raise ValueError(f"not an audit export ({FORMAT}): {error['loc']}: {error['msg']}") from None


Kind = Literal["tampered", "unverified"]  # evidence of a change, or what no checkpoint can vouch for


@dataclass(frozen=True)
class Problem:
    kind: Kind
    source: Source | None
    text: str

    def __str__(self) -> str:
        return f"{self.source}: {self.text}" if self.source else self.text


@dataclass
class StreamCheck:
    source: Source
    events: int
    anchored_version: int = 0  # the highest version a checkpoint signed and the export matches
    problems: list[Problem] = field(default_factory=list)


def verify_export(export: Export, checkpoints: Iterable[Checkpoint]) -> list[StreamCheck]:
    """Each of the subject's streams (those in the export and those a checkpoint signed): complete,
    every envelope its stored row, the chain recomputed from genesis, the heads the checkpoints
    signed matched, and nothing left unanchored. `checkpoints`: signatures already checked."""
    stream = export.stream_id
    signed: dict[Source, list[tuple[int, str, datetime]]] = {}
    for checkpoint in checkpoints:  # possibly many: only this subject's heads are kept
        if head := checkpoint.anchors(stream):
            signed.setdefault(checkpoint.service, []).append((head.version, head.hash, checkpoint.made_at))
    by_source: dict[Source, list[ExportedEvent]] = {}
    for event in export.events:
        by_source.setdefault(event.source, []).append(event)
    return [
        _check_stream(source, stream, by_source.get(source, []), signed.get(source, []))
        for source in SOURCES
        if source in by_source or source in signed
    ]


def _check_stream(
    source: Source, stream: UUID, events: list[ExportedEvent], signed: list[tuple[int, str, datetime]]
) -> StreamCheck:
    check = StreamCheck(source, len(events))

    def problem(kind: Kind, text: str) -> None:
        check.problems.append(Problem(kind, source, text))

    events = sorted(events, key=lambda e: e.version)
    if other := next((e for e in events if e.stream_id != stream), None):
        problem("tampered", f"version {other.version} is from stream {other.stream_id}, not the subject's")
        return check
    versions = [e.version for e in events]
    if versions != list(range(1, len(versions) + 1)):
        missing = sorted(set(range(1, max(versions) + 1)) - set(versions))
        text = (
            f"version{'s' * (len(missing) > 1)} {', '.join(map(str, missing))} missing"
            if missing
            else "a version is there twice"
        )
        problem("tampered", f"{text}: the export is not the whole stream")
        return check
    hashes, unchained = _recompute(events, problem)
    last = len(events)
    claims: dict[tuple[int, str], datetime] = {}  # (version, hash): the first checkpoint that signed it
    for version, hash_, made_at in signed:
        claims[(version, hash_)] = min(claims.get((version, hash_), made_at), made_at)
    for (version, hash_), made_at in sorted(claims.items()):  # the lowest version first; one finding is enough
        signed_by = f"the checkpoint of {made_at.isoformat()}"
        if version > last:
            problem(
                "tampered",
                f"{signed_by} signed version {version}, the export ends at {last}: events are missing from it "
                "(or the export is older than that checkpoint: export again)",
            )
        elif version in unchained:
            problem("tampered", f"version {version}: the export says it is not chained, but {signed_by} signed it")
        elif version not in hashes:
            break  # after the break the recomputation named: nothing to compare
        elif hashes[version] != hash_:
            problem("tampered", f"version {version}: the history up to it differs from what {signed_by} signed")
        else:
            check.anchored_version = version
            continue
        break
    if check.anchored_version < last and not check.problems:
        problem(
            "unverified",
            f"versions {check.anchored_version + 1} to {last} are not signed by any checkpoint given: "
            "export again after the next checkpoint, or give the newer checkpoints",
        )
    return check


def _recompute(events: list[ExportedEvent], problem: Callable[[Kind, str], None]) -> tuple[dict[int, str], set[int]]:
    """Each event's chain hash recomputed from genesis, as far as the stream holds together (the first
    break named), and the versions stored before the chain existed. Every envelope must be what its
    stored row decodes to."""
    hashes: dict[int, str] = {}
    previous: str | None = None
    unchained: set[int] = set()
    for event in events:
        try:
            row = event.stored()
            decoded = row.envelope().model_dump(mode="json")
        except Exception as exc:  # whatever a forged row makes the decoder raise
            problem("tampered", f"version {event.version}: its stored event cannot be read ({exc})")
            break
        if decoded != event.envelope:
            problem("tampered", f"version {event.version}: its envelope is not what its stored event says")
            break
        if event.chain_hash is None:
            if previous is None:  # stored before the chain existed, at the start of the stream
                unchained.add(event.version)
                continue
            problem("tampered", f"version {event.version} is not in the chain")
            break
        computed = chain_hash(previous or GENESIS, row.stream_id, row.version, row.topic, row.state)
        if computed != event.chain_hash:
            problem("tampered", f"version {event.version}: its stored event does not hash to its chain hash")
            break
        hashes[event.version] = previous = computed
    if unchained:
        problem("unverified", f"versions 1 to {len(unchained)} were stored before the chain existed: not verifiable")
    return hashes, unchained
