"""Grades derived from recorded findings (pure, no I/O).

- CRS and ICANS: ASTCT consensus grading (Lee et al., Biol Blood Marrow Transplant 2019;25:625-638).
- Acute GvHD: MAGIC overall grade (Harris et al., Biol Blood Marrow Transplant 2016;22:4-10).

The configurable thresholds (fever, low-flow oxygen limit, ICE cut-offs) come from the protocol file;
only fixed parts of the scales are written here. The derived grade is compared with the investigator's,
never substituted for it. It is a range: in children the CAPD score alone cannot tell grade 1 from 2.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.contract.findings import CRSFindings, GvHDStaging, ICANSFindings
from shared.protocol import CRSGrading, Grading, ICANSGrading


class GradeRange(NamedTuple):
    """The grades the findings allow, from `lowest` to `highest` (one grade when they are equal)."""

    lowest: int
    highest: int

    @classmethod
    def exactly(cls, grade: int) -> GradeRange:
        return cls(grade, grade)

    def includes(self, grade: int) -> bool:
        return self.lowest <= grade <= self.highest

    def __str__(self) -> str:
        return str(self.lowest) if self.lowest == self.highest else f"{self.lowest}-{self.highest}"


def worst(*domains: GradeRange) -> GradeRange:
    """The grade of several domains is the worst one: at least the highest of the lowest grades, at
    most the highest of the highest."""
    return GradeRange(max(d.lowest for d in domains), max(d.highest for d in domains))


# --- CRS (ASTCT 2019) ---------------------------------------------------------------------------

# ASTCT hypoxia: low-flow nasal cannula (<= limit) or blow-by G2; high flow, face mask, non-rebreather,
# Venturi G3; positive pressure (CPAP, BiPAP, intubation and ventilation) G4. "nasal_cannula" is graded by its flow.
_OXYGEN_GRADE = {
    "none": 0,
    "blow_by": 2,  # ASTCT 2019 (children): blow-by oxygen is low flow
    "high_flow_nasal_cannula": 3,
    "face_mask": 3,
    "non_rebreather": 3,
    "venturi": 3,
    "cpap": 4,
    "bipap": 4,
    "mechanical_ventilation": 4,
}


def _hypotension_grade(f: CRSFindings) -> int:
    # ASTCT: several vasopressors, vasopressin excluded from the count -> G4; one vasopressor with or
    # without vasopressin (vasopressin alone is one vasopressor) -> G3; no vasopressor needed -> G2.
    if f.vasopressors >= 2:
        return 4
    if f.vasopressors == 1 or f.vasopressin:
        return 3
    return 2 if f.hypotension else 0


def _hypoxia_grade(f: CRSFindings, cfg: CRSGrading) -> int:
    if f.oxygen_delivery == "nasal_cannula":
        # ASTCT: low-flow nasal cannula (<= 6 L/min in the protocol) G2; above that it is high flow, G3.
        assert f.oxygen_flow_l_min is not None  # guaranteed by CRSFindings
        return 2 if f.oxygen_flow_l_min <= cfg.low_flow_max_l_min else 3
    return _OXYGEN_GRADE[f.oxygen_delivery]


def crs_grade(findings: CRSFindings, cfg: CRSGrading) -> int:
    """ASTCT CRS grade 0-4; 0 means the criteria for CRS are not met."""
    # ASTCT: fever >= 38 C is required, unless masked by antipyretics or anti-cytokine therapy.
    if not (findings.fever_masked or findings.max_temperature_c >= cfg.fever_min_c):
        return 0
    # ASTCT: grade by the worse of hypotension and hypoxia; fever alone is grade 1.
    return max(1, _hypotension_grade(findings), _hypoxia_grade(findings, cfg))


# --- ICANS (ASTCT 2019) -------------------------------------------------------------------------

ICE_MAX = 10  # the ICE score is 0-10 (orientation 4, naming 3, commands 1, writing 1, attention 1)

_CONSCIOUSNESS_GRADE = {
    "awake": 0,
    "awakens_spontaneously": 1,
    "awakens_to_voice": 2,
    "awakens_to_touch": 3,
    "unarousable": 4,  # ASTCT: unarousable (ICE 0 because unable to perform it) is G4
}
_SEIZURE_GRADE = {"none": 0, "resolving_rapidly": 3, "prolonged_or_repetitive": 4}  # prolonged: > 5 min
_OEDEMA_GRADE = {"none": 0, "focal": 3, "diffuse_or_posturing": 4}


def _ice_grade(score: int | None, cfg: ICANSGrading) -> int:
    # ASTCT: ICE 10 none, 7-9 G1, 3-6 G2, 0-2 G3 (cut-offs from the protocol); not done: no contribution.
    if score is None or score >= ICE_MAX:
        return 0
    if score >= cfg.ice_grade1_min:
        return 1
    if score >= cfg.ice_grade2_min:
        return 2
    return 3


CAPD_GRADE3_MIN = 9  # ASTCT 2019 (children under 12): CAPD 1-8 is grade 1 or 2, 9 and above grade 3


def _capd_grade(score: int | None) -> GradeRange:
    # The CAPD alone cannot tell grade 1 from grade 2 (ASTCT lists 1-8 under both); not done: none.
    if not score:
        return GradeRange.exactly(0)
    return GradeRange(1, 2) if score < CAPD_GRADE3_MIN else GradeRange.exactly(3)


def icans_grade(findings: ICANSFindings, cfg: ICANSGrading) -> GradeRange:
    """ASTCT ICANS grade 0-4: the worst of the domains (a range when a CAPD score decides it)."""
    exact = max(
        _ice_grade(findings.ice_score, cfg),
        _CONSCIOUSNESS_GRADE[findings.consciousness],
        _SEIZURE_GRADE[findings.seizure],
        4 if findings.deep_focal_motor_weakness else 0,  # ASTCT: hemiparesis or paraparesis, G4
        _OEDEMA_GRADE[findings.cerebral_oedema],
        4 if findings.raised_icp_signs else 0,  # ASTCT: cranial nerve VI palsy, papilloedema, Cushing's triad
    )
    return worst(GradeRange.exactly(exact), _capd_grade(findings.capd_score))


# --- Acute GvHD (MAGIC, Harris et al. 2016) -----------------------------------------------------


def gvhd_overall_grade(staging: GvHDStaging) -> int:
    """MAGIC overall acute GvHD grade 0-IV, as 0-4."""
    s = staging
    if 4 in (s.skin_stage, s.liver_stage, s.lower_gi_stage):
        return 4  # IV: skin, liver or lower GI stage 4
    if s.liver_stage >= 2 or s.lower_gi_stage >= 2:
        return 3  # III: liver or lower GI stage 2-3 (skin 0-3, upper GI 0-1)
    if s.skin_stage == 3 or 1 in (s.liver_stage, s.upper_gi_stage, s.lower_gi_stage):
        return 2  # II: skin 3 and/or liver, upper GI or lower GI stage 1
    if s.skin_stage >= 1:
        return 1  # I: skin 1-2 without liver, upper GI or lower GI involvement
    return 0


# --- dispatch -----------------------------------------------------------------------------------


def derived_grade(
    category: str,
    crs: CRSFindings | None,
    icans: ICANSFindings | None,
    gvhd: GvHDStaging | None,
    grading: Grading,
) -> GradeRange | None:
    """The grades the findings of the AE's category allow; None if there is nothing to derive."""
    if category == "CRS" and crs is not None:
        return GradeRange.exactly(crs_grade(crs, grading.crs))
    if category == "ICANS" and icans is not None:
        return icans_grade(icans, grading.icans)
    if category == "GVHD" and gvhd is not None:
        return GradeRange.exactly(gvhd_overall_grade(gvhd))
    return None
