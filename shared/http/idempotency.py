"""Idempotency-Key: a retry with the same key gets the first answer and stores nothing new.

The key is claimed before the command runs and the answer saved after it succeeds. A failed command
releases its key, so a corrected retry may reuse it. A claim left behind by a crashed process is
taken over after `abandon_after` seconds (a retry of a stored event then meets the rule that refuses
a duplicate).
"""

from __future__ import annotations

import hashlib
import json

import asyncpg

from shared.errors import ConcurrentChange, InvalidCommand


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(b"\n".join([method.encode(), path.encode(), body])).hexdigest()


class IdempotencyStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, abandon_after: int = 60):
        self.pool = pool
        self.table = f"{schema}.idempotency_keys"
        self.abandon_after = abandon_after

    async def claim(self, key: str, request_fingerprint: str) -> tuple[int, dict] | None:
        """None: the key is ours, run the command. Otherwise the stored (status, body) to replay."""
        claimed = await self.pool.fetchval(
            f"""INSERT INTO {self.table} (key, request_fingerprint) VALUES ($1, $2)
                ON CONFLICT (key) DO UPDATE SET created_at = now()
                    WHERE {self.table}.status_code IS NULL
                      AND {self.table}.request_fingerprint = EXCLUDED.request_fingerprint
                      AND {self.table}.created_at < now() - make_interval(secs => $3)
                RETURNING key""",
            key, request_fingerprint, float(self.abandon_after),
        )
        if claimed:
            return None
        row = await self.pool.fetchrow(
            f"SELECT request_fingerprint, status_code, response_body FROM {self.table} WHERE key = $1", key
        )
        if row["request_fingerprint"] != request_fingerprint:
            raise InvalidCommand(
                f"Idempotency-Key {key!r} was already used for a different request; "
                "use a new key for a new request."
            )
        if row["status_code"] is None:
            raise ConcurrentChange(f"A request with Idempotency-Key {key!r} is still in progress; retry shortly.")
        return row["status_code"], json.loads(row["response_body"])

    async def complete(self, key: str, status: int, body: dict) -> None:
        await self.pool.execute(
            f"UPDATE {self.table} SET status_code = $2, response_body = $3::jsonb WHERE key = $1",
            key, status, json.dumps(body),
        )

    async def release(self, key: str) -> None:
        await self.pool.execute(f"DELETE FROM {self.table} WHERE key = $1 AND status_code IS NULL", key)
