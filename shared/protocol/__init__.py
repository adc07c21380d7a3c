"""The versioned protocol file: every threshold and window the rules and the schedule use."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PROTOCOL_FILE = Path(__file__).with_name("ucart-protocol.toml")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProtocolId(_Frozen):
    id: str
    version: str


class Lymphodepletion(_Frozen):
    min_days: int = Field(ge=1)
    max_days: int = Field(ge=1)
    min_gap_days_to_infusion: int = Field(ge=0)
    max_gap_days_to_infusion: int = Field(ge=0)


class Infusion(_Frozen):
    max_infusions: int = Field(ge=1)


class PlannedVisit(_Frozen):
    code: str
    kind: Literal["safety", "response", "persistence", "ltfu"]
    target_day: int
    window_before: int = Field(ge=0)
    window_after: int = Field(ge=0)


class FollowUp(_Frozen):
    dlt_window_days: int = Field(ge=0)
    main_followup_end_day: int = Field(ge=0)
    long_term_end_day: int = Field(ge=0)
    visits: tuple[PlannedVisit, ...]


class Protocol(_Frozen):
    protocol: ProtocolId
    lymphodepletion: Lymphodepletion
    infusion: Infusion
    followup: FollowUp
    response_visits: dict[str, str]

    @property
    def version(self) -> str:
        return f"{self.protocol.id}@{self.protocol.version}"

    @property
    def visit_codes(self) -> frozenset[str]:
        return frozenset(v.code for v in self.followup.visits)

    @model_validator(mode="after")
    def _coherent(self) -> Protocol:
        ld = self.lymphodepletion
        if ld.min_days > ld.max_days:
            raise ValueError("lymphodepletion.min_days is greater than max_days")
        unknown = set(self.response_visits.values()) - self.visit_codes
        if unknown:
            raise ValueError(f"response_visits name visits not in the schedule: {sorted(unknown)}")
        return self


@cache
def load_protocol(path: Path = DEFAULT_PROTOCOL_FILE) -> Protocol:
    with Path(path).open("rb") as f:
        return Protocol.model_validate(tomllib.load(f))
