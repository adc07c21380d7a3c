"""A read model a service keeps from the topics, described once: who keeps it, what it reads, its
table and DDL, its fold, and its version. The services wire their consumers from these, the operator
commands rebuild and compare with them, and the tests check them; `services/registry.py` lists them.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from shared.consumer import Projection
from shared.contract.topics import Source


@dataclass(frozen=True)
class ReadModel:
    service: Source  # the service that keeps it, in its own schema
    kind: str  # what it is, e.g. "journey"; the consumer is named "<service>-<kind>"
    alias: str  # the name operators give it: `ucart rebuild --projection <alias>`
    sources: tuple[Source, ...]  # the topics (and event stores) it is built from
    table: str
    ddl: Callable[[str], str]  # schema -> CREATE statements
    projection: Callable[[str], Projection]  # schema -> the fold
    # The code that is its shape and its fold: the version follows from it.
    defined_by: tuple[object, ...] = field(default=())

    @property
    def consumer(self) -> str:
        return f"{self.service}-{self.kind}"

    @cached_property
    def version(self) -> str:
        """Changes whenever its sources, its table or its fold's code change: the read model is then
        rebuilt from the event stores at start, so a stale one is never kept (no number to bump)."""
        digest = hashlib.sha256(" ".join(self.sources).encode())
        digest.update(self.ddl("schema").encode())
        for part in self.defined_by:
            digest.update(inspect.getsource(part).encode())  # type: ignore[arg-type]  # modules and classes
        return digest.hexdigest()[:16]
