"""Per-subject summaries the study tables are computed from (derived from the journey projection)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from shared.clinical import ResponseCode


@dataclass(frozen=True)
class Assessment:
    timepoint: str  # W4, W8, W12 or UNSCHEDULED
    response: ResponseCode
    assessed_on: date


@dataclass(frozen=True)
class SubjectOutcome:
    """What the efficacy analyses need of one infused subject."""

    subject_id: str
    infused_on: date
    assessments: tuple[Assessment, ...] = ()  # in date order
    relapsed_on: date | None = None  # first relapse after CR/CRi, or progression
    died_on: date | None = None
    last_contact_on: date | None = None  # last date known alive (for OS censoring); >= infused_on
    subsequent_therapy_on: date | None = None  # e.g. allo-HSCT

    @property
    def last_assessment_on(self) -> date:
        return self.assessments[-1].assessed_on if self.assessments else self.infused_on


@dataclass(frozen=True)
class AESummary:
    ae_id: str
    category: str  # CRS, ICANS, GVHD, INFECTION, CYTOPENIA, OTHER
    grade: int  # worst grade of the AE (investigator's, after updates and corrections)
    serious: bool
    suspected: bool  # relatedness possible, probable or definite
    expected: bool | None  # against the investigator's brochure; None = not yet assessed
    fatal_or_life_threatening: bool
    dlt: bool


@dataclass(frozen=True)
class SubjectSafety:
    """What the safety tables need of one infused subject."""

    subject_id: str
    dlt_evaluable: bool
    aes: tuple[AESummary, ...] = field(default_factory=tuple)

    @property
    def had_dlt(self) -> bool:
        return any(ae.dlt for ae in self.aes)
