"""The background task that anchors a service's hash chains outside its database.

Every `every` seconds, if the store moved since the last checkpoint, it signs a checkpoint of the
chain heads (shared/eventstore/checkpoint.py), appends it to the service's checkpoint file and then
publishes the same lines to the service's checkpoint topic. The file comes first: it needs no broker.
A checkpoint the topic did not take is made again at the next tick (the file then holds both).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from shared.contract.checkpoint import HEADS_PER_PART
from shared.contract.topics import Source
from shared.eventstore.checkpoint import snapshot
from shared.signing import Signer
from shared.time import now_utc

log = logging.getLogger(__name__)

PublishLine = Callable[[bytes], Awaitable[Any]]
Prepare = Callable[[], Awaitable[None]]


def _ends_a_line(file: Path) -> bool:
    with file.open("rb") as existing:
        existing.seek(-1, os.SEEK_END)
        return existing.read(1) == b"\n"


class Checkpointer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        service: Source,
        signer: Signer,
        file: Path,
        publish: PublishLine,
        *,
        every: float,
        prepare: Prepare,
        heads_per_part: int = HEADS_PER_PART,
        publish_seconds: float = 15.0,  # a broker that does not take a part by then is tried at the next tick
    ):
        self.pool, self.service, self.signer, self.file = pool, service, signer, file
        self.publish, self.prepare = publish, prepare
        self.every, self.heads_per_part, self.publish_seconds = every, heads_per_part, publish_seconds
        self.anchored: int | None = None  # the store's last notification id at the last checkpoint filed and published

    async def run(self) -> None:
        while True:
            try:
                await self.checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: checkpoint not completed (%s); trying again in %g s", self.service, exc, self.every)
            await asyncio.sleep(self.every)

    async def checkpoint(self) -> bool:
        """Make a checkpoint if the store moved since the last one; True if one was made."""
        async with self.pool.acquire() as conn, snapshot(conn, self.service) as store:
            position = store.last_notification_id
            if position in (0, self.anchored):
                return False
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self.file.open("ab") as out:
                if out.tell() and not _ends_a_line(self.file):
                    out.write(b"\n")  # a line cut short by a crash stays a line of its own (refused when read)
                start, parts = out.tell(), 0
                async for line in store.checkpoint(self.signer, now_utc(), self.heads_per_part):
                    # Written and synced on the loop, not in a thread: a task cancelled at shutdown never
                    # leaves half a line behind (a part is written whole, or not at all). It takes milliseconds.
                    out.write(line + b"\n")
                    parts += 1
                out.flush()
                os.fsync(out.fileno())  # the auditor's copy is on disk before the topic's
        await asyncio.wait_for(self.prepare(), self.publish_seconds)
        with self.file.open("rb") as written:
            written.seek(start)
            for line in written:  # read back, one part at a time: never the whole checkpoint in memory
                await asyncio.wait_for(self.publish(line.rstrip(b"\n")), self.publish_seconds)
        self.anchored = position
        log.info("%s: checkpoint of the chain heads at notification %d (%d part(s))", self.service, position, parts)
        return True
