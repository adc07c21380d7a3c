"""Safety tables (DOMAIN.md "Adverse events", "DLT"): DLT rate, CRS and ICANS by maximum grade, AE
incidence by category and worst grade, SAEs and SUSARs. Subjects are the infused subjects; the AEs are
the treatment-emergent ones (`from_journeys.safety` selects them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from services.followup.study.inputs import AESummary, SubjectSafety
from shared import clinical

GRADES = (1, 2, 3, 4, 5)
AE_COUNTING = (
    "Treatment-emergent AEs only: onset on or after the first lymphodepletion day (the infusion day if none is "
    "recorded) and by the cut-off, each at the worst grade reached by the cut-off. A DLT counts the grade reached "
    "inside the DLT window. AEs with onset before treatment (from enrolment on) are recorded but not counted here."
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class DLTRate(_Frozen):
    subjects_with_dlt: int
    dlt_evaluable: int
    rate: float | None  # None while no subject is evaluable


class MaxGrade(_Frozen):
    """Each subject counted once, at their worst grade; grade 0 = never had one."""

    category: str
    subjects: int  # denominator
    by_grade: dict[int, int]  # 0..5
    any_grade: int
    grade_3_or_higher: int


class Incidence(_Frozen):
    """Subjects with at least one AE of the category, by their worst grade of it."""

    category: str
    subjects: int
    by_worst_grade: dict[int, int]  # 1..5


class SubjectsAndEvents(_Frozen):
    subjects: int
    events: int


class SafetyTable(_Frozen):
    subjects: int
    ae_counting: str  # which AEs the table counts, and at which grade
    aes_not_treatment_emergent: int  # AEs with onset before treatment, left out of every count below
    dlt: DLTRate
    crs: MaxGrade
    icans: MaxGrade
    ae_incidence: tuple[Incidence, ...]
    sae: SubjectsAndEvents
    susar: SubjectsAndEvents  # serious + suspected + expected is False
    awaiting_expectedness: SubjectsAndEvents  # serious + suspected, expectedness not yet assessed


def _worst(s: SubjectSafety, category: str) -> int:
    return max((ae.grade for ae in s.aes if ae.category == category), default=0)


def _max_grade(subjects: Sequence[SubjectSafety], category: str) -> MaxGrade:
    worst = [_worst(s, category) for s in subjects]
    return MaxGrade(
        category=category,
        subjects=len(subjects),
        by_grade={g: worst.count(g) for g in (0, *GRADES)},
        any_grade=sum(w > 0 for w in worst),
        grade_3_or_higher=sum(w >= 3 for w in worst),
    )


def _incidence(subjects: Sequence[SubjectSafety], category: str) -> Incidence:
    worst = [w for w in (_worst(s, category) for s in subjects) if w > 0]
    return Incidence(category=category, subjects=len(worst), by_worst_grade={g: worst.count(g) for g in GRADES})


def _count(subjects: Sequence[SubjectSafety], which: Callable[[AESummary], bool]) -> SubjectsAndEvents:
    per_subject = [sum(1 for ae in s.aes if which(ae)) for s in subjects]
    return SubjectsAndEvents(subjects=sum(n > 0 for n in per_subject), events=sum(per_subject))


def _all_aes(subjects: Iterable[SubjectSafety]) -> Iterable[AESummary]:
    return (ae for s in subjects for ae in s.aes)


def safety_table(subjects: Sequence[SubjectSafety]) -> SafetyTable:
    for ae in _all_aes(subjects):
        if ae.grade not in GRADES:
            raise ValueError(f"AE {ae.ae_id}: CTCAE grade must be 1-5, got {ae.grade}")
    # DOMAIN.md: a subject becomes DLT-evaluable once the window has closed *or a DLT occurred*,
    # so a DLT makes the subject evaluable even if the flag lags behind.
    evaluable = [s for s in subjects if s.dlt_evaluable or s.had_dlt]
    with_dlt = sum(s.had_dlt for s in evaluable)
    # Every category is listed, even at 0.
    categories = clinical.CATEGORIES + tuple(
        sorted({ae.category for ae in _all_aes(subjects)} - set(clinical.CATEGORIES))
    )
    return SafetyTable(
        subjects=len(subjects),
        ae_counting=AE_COUNTING,
        aes_not_treatment_emergent=sum(s.not_treatment_emergent for s in subjects),
        dlt=DLTRate(
            subjects_with_dlt=with_dlt,
            dlt_evaluable=len(evaluable),
            rate=with_dlt / len(evaluable) if evaluable else None,
        ),
        crs=_max_grade(subjects, "CRS"),
        icans=_max_grade(subjects, "ICANS"),
        ae_incidence=tuple(_incidence(subjects, c) for c in categories),
        sae=_count(subjects, lambda ae: ae.serious),
        susar=_count(subjects, lambda ae: clinical.susar(ae.serious, ae.suspected, ae.expected)),
        awaiting_expectedness=_count(subjects, lambda ae: ae.serious and ae.suspected and ae.expected is None),
    )
