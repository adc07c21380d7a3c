"""Idempotency-Key: a retry with the same key gets the first answer and stores nothing new.

The key is claimed before the command runs; the answer is written in the same transaction as the
command's events (`WITH_THE_EVENTS`), so there are never events without their answer, nor an answer
without its events. A command that fails releases its key, so a corrected retry may reuse it.
Requests racing with one key: one runs, the others get the stored answer or 409 "in progress". A
claim left behind by a crashed process is taken over after `abandon_after` seconds (nothing of it
was committed, or its answer would be there).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import asyncpg

from shared.contract.envelope import Envelope
from shared.errors import ConcurrentChange, InvalidCommand
from shared.eventstore.application import Write

CREATED = 201


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, abandon_after: int = 60):
        self.pool = pool
        self.table = f"{schema}.idempotency_keys"
        self.abandon_after = abandon_after

    async def claim(self, key: str, request_fingerprint: str) -> tuple[int, dict[str, Any]] | None:
        """None: the key is ours, run the command. Otherwise the stored (status, body) to replay."""
        for _ in range(3):  # a claim released between our insert and our read: try again
            claimed = await self.pool.fetchval(
                f"""INSERT INTO {self.table} (key, request_fingerprint) VALUES ($1, $2)
                    ON CONFLICT (key) DO UPDATE SET created_at = now()
                        WHERE {self.table}.status_code IS NULL
                          AND {self.table}.request_fingerprint = EXCLUDED.request_fingerprint
                          AND {self.table}.created_at < now() - make_interval(secs => $3)
                    RETURNING key""",
                key,
                request_fingerprint,
                float(self.abandon_after),
            )
            if claimed:
                return None
            row = await self.pool.fetchrow(
                f"SELECT request_fingerprint, status_code, response_body FROM {self.table} WHERE key = $1", key
            )
            if row is None:
                continue
            if row["request_fingerprint"] != request_fingerprint:
                raise InvalidCommand(
                    f"Idempotency-Key {key!r} was already used for a different request; "
                    "use a new key for a new request."
                )
            if row["status_code"] is not None:
                return row["status_code"], json.loads(row["response_body"])
            break
        raise ConcurrentChange(
            f"A request with Idempotency-Key {key!r} is still in progress; retry shortly.", retryable=True
        )

    def answer_with_the_events(
        self, key: str, answer: Callable[[list[Envelope]], dict[str, Any]]
    ) -> Callable[[list[Envelope]], list[Write]]:
        """The write that stores the command's answer, for the transaction that stores its events."""

        def writes(envelopes: list[Envelope]) -> list[Write]:
            return [
                (
                    f"UPDATE {self.table} SET status_code = %s, response_body = %s::jsonb WHERE key = %s",
                    (CREATED, json.dumps(answer(envelopes)), key),
                )
            ]

        return writes

    async def release(self, key: str) -> None:
        await self.pool.execute(f"DELETE FROM {self.table} WHERE key = $1 AND status_code IS NULL", key)
