"""Anchoring the hash chains: a store's signed checkpoint, made here; a checkpoint read back and its
signature checked; a store checked against the checkpoints someone kept.

`verify_store` (chain.py) shows an event changed without the chain; a checkpoint shows the rest. Every
head a checkpoint signed must still be in the store's chain, with the same hash at the same version:
an event edited with the chain recomputed changes the hash, a removed tail removes the version, a
removed stream removes the stream.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg
from pydantic import ValidationError

from shared.contract.checkpoint import FORMAT, HEADS_PER_PART, Checkpoint, canonical, signed_bytes
from shared.contract.topics import Source
from shared.eventstore.chain import Finding
from shared.signing import Signer, Verifier


@dataclass(frozen=True)
class Snapshot:
    """A service's store as one repeatable-read transaction sees it."""

    conn: asyncpg.Connection
    service: Source
    last_notification_id: int  # 0: nothing stored yet

    async def checkpoint(
        self, signer: Signer, made_at: datetime, heads_per_part: int = HEADS_PER_PART
    ) -> AsyncIterator[bytes]:
        """The store's checkpoint as signed JSON lines (no line break), one per part.

        One query for every head, read through a cursor: memory holds two parts at most, however
        many streams the store has (the look-ahead tells the last part)."""
        # Descending on both columns: the chain's primary key read backwards gives the order, no sort.
        cursor = await self.conn.cursor(
            f"""SELECT DISTINCT ON (originator_id) originator_id, originator_version, hash
                FROM {self.service}.{self.service}_events_chain ORDER BY originator_id DESC, originator_version DESC"""
        )
        number, rows = 1, await cursor.fetch(heads_per_part)
        while len(rows) == heads_per_part and (following := await cursor.fetch(heads_per_part)):
            yield self._part(signer, made_at, number, rows, last=False)
            number, rows = number + 1, following
        yield self._part(signer, made_at, number, rows, last=True)

    def _part(self, signer: Signer, made_at: datetime, number: int, rows: list[asyncpg.Record], last: bool) -> bytes:
        message = {
            "format": FORMAT,
            "service": self.service,
            "made_at": made_at.isoformat(),
            "last_notification_id": self.last_notification_id,
            "part": number,
            "last_part": last,
            "heads": [{"stream": str(r[0]), "version": r[1], "hash": r[2]} for r in rows],
            "key_id": signer.key_id,
        }
        signature = base64.b64encode(signer.sign(canonical(message))).decode()
        return canonical({**message, "signature": signature})


@asynccontextmanager
async def snapshot(conn: asyncpg.Connection, service: Source) -> AsyncIterator[Snapshot]:
    """Read the store in one snapshot: the heads and the position of a checkpoint agree."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        position = await conn.fetchval(f"SELECT coalesce(max(notification_id), 0) FROM {service}.{service}_events")
        yield Snapshot(conn, service, position)


class Refused(ValueError):
    """A checkpoint that cannot be used: unreadable, unsigned, or not signed by its service's key."""


def read_checkpoint(line: bytes | str, verifier: Verifier) -> Checkpoint:
    """A checkpoint line, its signature checked with the public keys; Refused says why not."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise Refused(f"not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise Refused("not a checkpoint: not a JSON object")
    key_id, signature = message.get("key_id"), message.get("signature")
    try:
        raw = base64.b64decode(signature, validate=True) if isinstance(signature, str) else None
    except binascii.Error:
        raw = None
    if problem := verifier.problem(key_id if isinstance(key_id, str) else None, signed_bytes(message), raw):
        raise Refused(problem)
    try:
        checkpoint = Checkpoint.model_validate(message)
    except ValidationError as exc:
        raise Refused(f"not a checkpoint: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    if checkpoint.key_id.rsplit("-", 1)[0] != checkpoint.service:
        raise Refused(f"signed by {checkpoint.key_id}, not by a key of the {checkpoint.service} service")
    return checkpoint


@dataclass
class Anchors:
    """What one service's checkpoints signed: per (stream, version), each hash and the first
    checkpoint that signed it. Bounded by the store's events, however many checkpoints were kept."""

    service: Source
    claims: dict[tuple[UUID, int], dict[str, datetime]] = field(default_factory=dict)
    made: set[datetime] = field(default_factory=set)  # a checkpoint in several parts counts once

    @property
    def checkpoints(self) -> int:
        return len(self.made)

    def add(self, checkpoint: Checkpoint) -> None:
        assert checkpoint.service == self.service
        self.made.add(checkpoint.made_at)
        for head in checkpoint.heads:
            made = self.claims.setdefault((head.stream, head.version), {})
            made[head.hash] = min(made.get(head.hash, checkpoint.made_at), checkpoint.made_at)


async def check_store(conn: asyncpg.Connection, anchors: Anchors) -> list[Finding]:
    """Every head the checkpoints signed, against the store's chain now: the first failing one of
    each stream (the lowest version), named."""
    service = anchors.service
    keys = sorted(anchors.claims)
    found: dict[tuple[UUID, int], tuple[str | None, int | None]] = {}
    if keys and await conn.fetchval("SELECT to_regclass($1)", f"{service}.{service}_events_chain"):
        chain = f"{service}.{service}_events_chain"
        rows = await conn.fetch(
            f"""SELECT c.stream, c.version, h.hash,
                       (SELECT max(originator_version) FROM {chain} WHERE originator_id = c.stream) AS head
                FROM unnest($1::uuid[], $2::bigint[]) AS c(stream, version)
                LEFT JOIN {chain} h ON h.originator_id = c.stream AND h.originator_version = c.version""",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        found = {(r["stream"], r["version"]): (r["hash"], r["head"]) for r in rows}
    findings: dict[UUID, Finding] = {}
    for stream, version in keys:  # sorted: each stream's lowest version first
        if stream in findings:
            continue
        stored, head = found.get((stream, version), (None, None))
        for signed, made_at in sorted(anchors.claims[(stream, version)].items(), key=lambda c: c[1]):
            if stored == signed:
                continue
            signed_by = f"the checkpoint of {made_at.isoformat()}"
            if head is None:
                problem = f"the stream is gone: removed; {signed_by} signed it at version {version}"
            elif stored is None and head < version:
                gone = f"version {version} is" if head + 1 == version else f"versions {head + 1} to {version} are"
                problem = f"{gone} gone: removed; {signed_by} signed version {version}"
            elif stored is None:
                problem = f"its chain row is gone: removed; {signed_by} signed it"
            else:
                problem = f"the history up to this version was rewritten: its chain hash is not what {signed_by} signed"
            findings[stream] = Finding(service, stream, version, None, problem)
            break
    return list(findings.values())
