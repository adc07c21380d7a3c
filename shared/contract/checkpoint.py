"""A checkpoint: one service's signed statement of its event store's chain heads at a moment.

Each service appends its checkpoints to `<service>.jsonl` and publishes the same bytes to
`ucart.<service>.checkpoints` (key: the service). A head (stream, version, hash) is the chain hash of
the stream's last event, which commits to every event of the stream up to it; a checkpoint kept
outside the database therefore shows a history rewritten with SQL, even with the chain recomputed.

A store with many streams is checkpointed in parts of at most `HEADS_PER_PART` heads (a Kafka
message stays well under 1 MB), each part signed on its own and read on its own; `last_part` marks
the last one. What is signed: the JSON object without `signature`, in canonical form (`canonical`),
with Ed25519 by the key `key_id` (`<service>-<12 hex>`); `signature` holds it in base64. Every value
is a string, an integer, a boolean or a list or object of them, so the canonical form is the same in
any language: keys sorted, no spaces, non-ASCII escaped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contract.topics import Source

FORMAT = 1
HEADS_PER_PART = 2000  # about 220 kB of JSON a part

ChainHash = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="The chain hash: sha256, hex (ADR 0008).")]


def canonical(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def signed_bytes(message: Mapping[str, Any]) -> bytes:
    """What the signature of a checkpoint (as parsed JSON) is over: everything but the signature."""
    return canonical({k: v for k, v in message.items() if k != "signature"})


class Head(BaseModel):
    """A stream's chain head: the hash of its event at `version`, chained from its first."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: UUID = Field(description="The subject's stream in the store (uuid5 of the study code).")
    version: int = Field(ge=1)
    hash: ChainHash


class Checkpoint(BaseModel):
    """One part of a service's signed checkpoint of its event store's chain heads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = Field(description="The checkpoint format; a new one gets a new number.")
    service: Source
    made_at: AwareDatetime = Field(description="When the store was read (one snapshot for every part).")
    last_notification_id: int = Field(ge=0, description="The store's last notification id in that snapshot.")
    part: int = Field(ge=1, description="Parts are numbered from 1, streams in descending id order.")
    last_part: bool = Field(description="True on the checkpoint's last part.")
    heads: list[Head] = Field(description=f"At most {HEADS_PER_PART} heads a part.")
    key_id: str = Field(description="The signing key: `<service>-<12 hex of its public key's sha256>`.")
    signature: str = Field(description="Ed25519, base64, over the canonical JSON of the rest.")

    def anchors(self, stream: UUID) -> Head | None:
        return next((h for h in self.heads if h.stream == stream), None)
