"""The versioned protocol file: every threshold and window the rules and the schedule use."""

from __future__ import annotations

import tomllib
from datetime import UTC, date, tzinfo
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.clinical import AECategory, Relatedness

DEFAULT_PROTOCOL_FILE = Path(__file__).with_name("ucart-protocol.toml")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProtocolId(_Frozen):
    id: str
    version: str


class Enrolment(_Frozen):
    study_start_date: date
    min_age_years: int = Field(ge=0)
    max_age_years: int = Field(ge=0)


class Site(_Frozen):
    name: str
    time_zone: str  # an IANA name, e.g. "Europe/Paris"

    @model_validator(mode="after")
    def _known_zone(self) -> Site:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"sites: {self.time_zone!r} is not an IANA time zone (e.g. Europe/Paris)") from None
        return self


class Lymphodepletion(_Frozen):
    min_days: int = Field(ge=1)
    max_days: int = Field(ge=1)
    min_gap_days_to_infusion: int = Field(ge=0)
    max_gap_days_to_infusion: int = Field(ge=0)


class Infusion(_Frozen):
    max_infusions: int = Field(ge=1)


class PlannedVisit(_Frozen):
    code: str
    kind: Literal["safety", "response", "persistence", "ltfu", "survival"]
    target_day: int
    window_before: int = Field(ge=0)
    window_after: int = Field(ge=0)


class FollowUp(_Frozen):
    main_followup_end_day: int = Field(ge=0)
    long_term_end_day: int = Field(ge=0)
    survival_end_day: int = Field(ge=0)
    visits: tuple[PlannedVisit, ...]


class ResponseCriteria(_Frozen):
    cr_max_marrow_blasts_pct: float
    cr_min_anc_10e9_per_l: float
    cr_min_platelets_10e9_per_l: float
    mrd_negative_below_pct: float
    relapse_min_marrow_blasts_pct: float
    pd_min_blast_increase_pct: float = Field(gt=0)


class CRSGrading(_Frozen):
    fever_min_c: float
    low_flow_max_l_min: float


class ICANSGrading(_Frozen):
    ice_grade1_min: int = Field(ge=1, le=10)
    ice_grade2_min: int = Field(ge=1, le=10)

    @model_validator(mode="after")
    def _ordered(self) -> ICANSGrading:
        if self.ice_grade2_min >= self.ice_grade1_min:
            raise ValueError("grading.icans: ice_grade2_min must be below ice_grade1_min")
        return self


class Grading(_Frozen):
    crs: CRSGrading
    icans: ICANSGrading


class DLTRule(_Frozen):
    category: AECategory
    min_grade: int = Field(ge=1, le=5)
    min_relatedness: Relatedness


class DLT(_Frozen):
    window_days: int = Field(ge=0)
    rules: tuple[DLTRule, ...]
    # A subject who left the study (death, withdrawal, loss) inside the window without a DLT counts in
    # the DLT rate's denominator: off by default (phase 1 practice replaces them).
    early_exit_evaluable: bool = False


class SafetyReporting(_Frozen):
    sae_to_sponsor_hours: int = Field(ge=1)
    fatal_or_life_threatening_susar_days: int = Field(ge=1)
    other_susar_days: int = Field(ge=1)


class Protocol(_Frozen):
    protocol: ProtocolId
    enrolment: Enrolment
    lymphodepletion: Lymphodepletion
    infusion: Infusion
    response: ResponseCriteria
    followup: FollowUp
    response_visits: dict[str, str]
    grading: Grading
    dlt: DLT
    safety_reporting: SafetyReporting
    sites: dict[str, Site] = {}

    @property
    def version(self) -> str:
        return f"{self.protocol.id}@{self.protocol.version}"

    @property
    def visit_codes(self) -> frozenset[str]:
        return frozenset(v.code for v in self.followup.visits)

    def zone(self, site_id: str | None) -> tzinfo:
        """The time zone of a site's calendar; UTC for a site the protocol does not list."""
        site = self.sites.get(site_id or "")
        return ZoneInfo(site.time_zone) if site else UTC

    @model_validator(mode="after")
    def _coherent(self) -> Protocol:
        ld = self.lymphodepletion
        if ld.min_days > ld.max_days:
            raise ValueError("lymphodepletion.min_days is greater than max_days")
        if self.enrolment.min_age_years > self.enrolment.max_age_years:
            raise ValueError("enrolment.min_age_years is greater than max_age_years")
        unknown = set(self.response_visits.values()) - self.visit_codes
        if unknown:
            raise ValueError(f"response_visits name visits not in the schedule: {sorted(unknown)}")
        return self


@cache
def load_protocol(path: Path = DEFAULT_PROTOCOL_FILE) -> Protocol:
    with Path(path).open("rb") as f:
        return Protocol.model_validate(tomllib.load(f))
