"""Checkpoints as an auditor keeps them: checkpoint files (a line each), or the checkpoint topics.

Each line is read on its own and its signature checked; one that cannot be used is refused, with
where it was and why, and the others are still used.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from infra.replay import partitions_of
from shared.config import Settings
from shared.contract.checkpoint import Checkpoint
from shared.contract.topics import SOURCES, checkpoint_topic
from shared.eventstore.checkpoint import Refused, read_checkpoint
from shared.signing import Verifier
from shared.transport import kafka_options

Line = tuple[str, bytes]  # where it was read (file and line, or topic, partition and offset), the line


def file_lines(path: Path) -> Iterator[Line]:
    """The lines of a checkpoint file, or of every `*.jsonl` in a directory; one at a time."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield f"{file}:{number}", line


async def topic_lines(settings: Settings) -> AsyncIterator[Line]:
    """Every message of the services' checkpoint topics, from the earliest offset to the end."""
    topics = [checkpoint_topic(s, settings.topic_prefix) for s in SOURCES]
    partitions = await partitions_of(settings, topics)
    if not partitions:
        return
    reader = AIOKafkaConsumer(
        group_id=None, enable_auto_commit=False, auto_offset_reset="earliest", **kafka_options(settings)
    )
    await reader.start()
    try:
        reader.assign(partitions)
        await reader.seek_to_beginning(*partitions)
        end = await reader.end_offsets(partitions)
        while [tp for tp in partitions if await reader.position(tp) < end[tp]]:
            for records in (await reader.getmany(timeout_ms=500)).values():
                for r in records:
                    yield f"{r.topic} partition {r.partition} offset {r.offset}", r.value or b""
    finally:
        await reader.stop()


@dataclass
class Kept:
    """The checkpoints read so far: those whose signature holds, and where the others were and why."""

    verifier: Verifier
    refused: list[str] = field(default_factory=list)
    read: int = 0

    def check(self, where: str, line: bytes) -> Checkpoint | None:
        self.read += 1
        try:
            return read_checkpoint(line, self.verifier)
        except Refused as exc:
            self.refused.append(f"{where}: {exc}")
            return None

    def signed(self, lines: Iterator[Line], progress: Callable[[int], None] | None = None) -> Iterator[Checkpoint]:
        for where, line in lines:
            if progress:
                progress(1)
            if (checkpoint := self.check(where, line)) is not None:
                yield checkpoint
