"""Per-subject summaries the study tables are computed from (derived from the journey projection)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

from services.followup.projections.journey import KnownAlive
from shared import clinical
from shared.clinical import ResponseCode


@dataclass(frozen=True)
class Assessment:
    timepoint: str  # W4, W8, W12, M6, M9, M12 or UNSCHEDULED
    response: ResponseCode
    assessed_on: date


@dataclass(frozen=True)
class SubjectOutcome:
    """What the efficacy analyses need of one infused subject. Disease events are read from the
    assessments, so that a cut-off removes them with the assessments."""

    subject_id: str
    infused_on: date
    assessments: tuple[Assessment, ...] = ()  # in date order
    died_on: date | None = None
    known_alive: tuple[KnownAlive, ...] = ()  # every date known alive, and from when it is known (OS censoring)
    subsequent_therapy_on: date | None = None  # e.g. allo-HSCT

    @property
    def last_assessment_on(self) -> date:
        return self.assessments[-1].assessed_on if self.assessments else self.infused_on

    def _first(self, which: Callable[[str], bool], after: int = 0) -> int | None:
        """Index of the first assessment from `after` on whose response is `which`."""
        return next((i for i, a in enumerate(self.assessments) if i >= after and which(a.response)), None)

    def _date(self, index: int | None) -> date | None:
        return None if index is None else self.assessments[index].assessed_on

    @property
    def first_remission_on(self) -> date | None:
        """The first CR/CRi (where the duration of remission starts)."""
        return self._date(self._first(clinical.in_remission))

    @property
    def progressed_on(self) -> date | None:
        """The first progression: relapse or progressive disease (what ends progression-free survival)."""
        return self._date(self._first(clinical.progressed))

    @property
    def relapsed_on(self) -> date | None:
        """The first progression after the first CR/CRi (what ends the remission)."""
        remission = self._first(clinical.in_remission)
        return None if remission is None else self._date(self._first(clinical.progressed, after=remission + 1))


@dataclass(frozen=True)
class AESummary:
    ae_id: str
    category: str  # CRS, ICANS, GVHD, INFECTION, CYTOPENIA, OTHER
    grade: int  # worst grade of the AE reached by the cut-off (investigator's, after updates and corrections)
    serious: bool
    suspected: bool  # relatedness possible, probable or definite
    expected: bool | None  # against the investigator's brochure; None = not yet assessed
    fatal_or_life_threatening: bool
    dlt: bool


@dataclass(frozen=True)
class SubjectSafety:
    """What the safety tables need of one infused subject: the treatment-emergent AEs."""

    subject_id: str
    dlt_evaluable: bool
    aes: tuple[AESummary, ...] = field(default_factory=tuple)
    not_treatment_emergent: int = 0  # AEs with onset before treatment: recorded, not counted in the tables

    @property
    def had_dlt(self) -> bool:
        return any(ae.dlt for ae in self.aes)
