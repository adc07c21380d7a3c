"""Derived grades: ASTCT CRS and ICANS (adults and children), MAGIC acute GvHD (pure, no I/O)."""

import pytest

from services.followup.grading import (
    GradeRange,
    crs_grade,
    derived_grade,
    gvhd_overall_grade,
    icans_grade,
    worst,
)
from shared.contract.findings import CRSFindings, GvHDStaging, ICANSFindings
from shared.protocol import CRSGrading, Grading, ICANSGrading, load_protocol

GRADING = load_protocol().grading
CRS = GRADING.crs
ICANS = GRADING.icans
FEVER = 38.5


def test_protocol_thresholds_are_the_astct_ones():
    # The tests below rely on these values; a protocol amendment must revisit them.
    assert (CRS.fever_min_c, CRS.low_flow_max_l_min) == (38.0, 6.0)
    assert (ICANS.ice_grade1_min, ICANS.ice_grade2_min) == (7, 3)


def crs(**changes) -> CRSFindings:
    return CRSFindings(**({"max_temperature_c": FEVER} | changes))


# --- CRS ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("temperature", "grade"), [(37.9, 0), (38.0, 1), (39.5, 1)])
def test_fever_is_at_least_the_protocol_threshold(temperature, grade):
    assert crs_grade(crs(max_temperature_c=temperature), CRS) == grade


def test_masked_fever_counts_as_fever():
    assert crs_grade(crs(max_temperature_c=36.8, fever_masked=True), CRS) == 1
    assert crs_grade(crs(max_temperature_c=36.8, fever_masked=True, hypotension=True, vasopressors=1), CRS) == 3
    assert crs_grade(crs(max_temperature_c=36.8, fever_masked=True, oxygen_delivery="bipap"), CRS) == 4


@pytest.mark.parametrize(
    "changes",
    [
        {"hypotension": True},
        {"hypotension": True, "vasopressors": 2},
        {"hypotension": True, "vasopressin": True},
        {"oxygen_delivery": "mechanical_ventilation"},
        {"oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 10.0},
    ],
)
def test_without_fever_the_grade_is_0_whatever_else_was_recorded(changes):
    assert crs_grade(crs(max_temperature_c=37.2, **changes), CRS) == 0


@pytest.mark.parametrize(
    ("changes", "grade"),
    [
        ({}, 1),
        ({"hypotension": True}, 2),
        ({"hypotension": True, "vasopressors": 1}, 3),
        ({"hypotension": True, "vasopressors": 1, "vasopressin": True}, 3),
        ({"hypotension": True, "vasopressin": True}, 3),  # vasopressin alone is one vasopressor
        ({"hypotension": True, "vasopressors": 2}, 4),
        ({"hypotension": True, "vasopressors": 2, "vasopressin": True}, 4),
        ({"hypotension": True, "vasopressors": 3}, 4),
    ],
)
def test_hypotension_by_vasopressors(changes, grade):
    assert crs_grade(crs(**changes), CRS) == grade


@pytest.mark.parametrize(("flow", "grade"), [(0.5, 2), (6.0, 2), (6.1, 3), (15.0, 3)])
def test_nasal_cannula_low_flow_limit(flow, grade):
    assert crs_grade(crs(oxygen_delivery="nasal_cannula", oxygen_flow_l_min=flow), CRS) == grade


@pytest.mark.parametrize(
    ("delivery", "grade"),
    [
        ("none", 1),
        ("blow_by", 2),  # ASTCT 2019, children: low flow
        ("high_flow_nasal_cannula", 3),
        ("face_mask", 3),
        ("non_rebreather", 3),
        ("venturi", 3),
        ("cpap", 4),
        ("bipap", 4),
        ("mechanical_ventilation", 4),
    ],
)
def test_each_oxygen_delivery(delivery, grade):
    assert crs_grade(crs(oxygen_delivery=delivery), CRS) == grade


def test_oxygen_flow_only_matters_for_a_nasal_cannula():
    assert crs_grade(crs(oxygen_delivery="high_flow_nasal_cannula", oxygen_flow_l_min=4.0), CRS) == 3
    with pytest.raises(ValueError, match="oxygen_delivery is none"):
        crs(oxygen_delivery="none", oxygen_flow_l_min=4.0)


@pytest.mark.parametrize(
    ("changes", "grade"),
    [
        ({"hypotension": True, "oxygen_delivery": "high_flow_nasal_cannula"}, 3),
        ({"hypotension": True, "vasopressors": 1, "oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 2.0}, 3),
        ({"hypotension": True, "vasopressors": 2, "oxygen_delivery": "face_mask"}, 4),
        ({"hypotension": True, "oxygen_delivery": "cpap"}, 4),
        ({"hypotension": True, "oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 3.0}, 2),
    ],
)
def test_grade_is_the_worse_of_hypotension_and_hypoxia(changes, grade):
    assert crs_grade(crs(**changes), CRS) == grade


def test_crs_thresholds_come_from_config():
    five_litres = crs(oxygen_delivery="nasal_cannula", oxygen_flow_l_min=5.0)
    assert crs_grade(five_litres, CRS) == 2
    assert crs_grade(five_litres, CRSGrading(fever_min_c=38.0, low_flow_max_l_min=4.0)) == 3

    low_fever = crs(max_temperature_c=37.8)
    assert crs_grade(low_fever, CRS) == 0
    assert crs_grade(low_fever, CRSGrading(fever_min_c=37.5, low_flow_max_l_min=6.0)) == 1


# --- ICANS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ice", "grade"), [(10, 0), (9, 1), (8, 1), (7, 1), (6, 2), (3, 2), (2, 3), (1, 3), (0, 3), (None, 0)]
)
def test_ice_score(ice, grade):
    assert icans_grade(ICANSFindings(ice_score=ice), ICANS) == (grade, grade)


@pytest.mark.parametrize(
    ("consciousness", "grade"),
    [
        ("awake", 0),
        ("awakens_spontaneously", 1),
        ("awakens_to_voice", 2),
        ("awakens_to_touch", 3),
        ("unarousable", 4),
    ],
)
def test_each_consciousness_level(consciousness, grade):
    assert icans_grade(ICANSFindings(consciousness=consciousness), ICANS) == (grade, grade)


def test_unarousable_with_ice_0_is_grade_4():
    assert icans_grade(ICANSFindings(ice_score=0, consciousness="unarousable"), ICANS) == (4, 4)


@pytest.mark.parametrize(("seizure", "grade"), [("none", 0), ("resolving_rapidly", 3), ("prolonged_or_repetitive", 4)])
def test_seizures(seizure, grade):
    assert icans_grade(ICANSFindings(seizure=seizure), ICANS) == (grade, grade)


def test_deep_focal_motor_weakness_is_grade_4():
    assert icans_grade(ICANSFindings(deep_focal_motor_weakness=True), ICANS) == (4, 4)
    assert icans_grade(ICANSFindings(deep_focal_motor_weakness=False), ICANS) == (0, 0)


@pytest.mark.parametrize(("oedema", "grade"), [("none", 0), ("focal", 3), ("diffuse_or_posturing", 4)])
def test_cerebral_oedema(oedema, grade):
    assert icans_grade(ICANSFindings(cerebral_oedema=oedema), ICANS) == (grade, grade)


def test_no_findings_is_grade_0():
    assert icans_grade(ICANSFindings(), ICANS) == (0, 0)


@pytest.mark.parametrize(
    ("changes", "grade"),
    [
        ({"ice_score": 8, "consciousness": "awakens_to_voice"}, 2),
        ({"ice_score": 5, "consciousness": "awakens_spontaneously"}, 2),
        ({"ice_score": 9, "seizure": "resolving_rapidly"}, 3),
        ({"ice_score": 2, "consciousness": "awakens_to_voice"}, 3),
        ({"ice_score": 10, "cerebral_oedema": "focal", "seizure": "prolonged_or_repetitive"}, 4),
        ({"ice_score": 4, "deep_focal_motor_weakness": True}, 4),
    ],
)
def test_icans_grade_is_the_worst_domain(changes, grade):
    assert icans_grade(ICANSFindings(**changes), ICANS) == (grade, grade)


def test_ice_cut_offs_come_from_config():
    stricter = ICANSGrading(ice_grade1_min=8, ice_grade2_min=4)
    assert icans_grade(ICANSFindings(ice_score=7), ICANS).highest == 1
    assert icans_grade(ICANSFindings(ice_score=7), stricter).highest == 2
    assert icans_grade(ICANSFindings(ice_score=3), ICANS).highest == 2
    assert icans_grade(ICANSFindings(ice_score=3), stricter).highest == 3
    assert icans_grade(ICANSFindings(ice_score=10), stricter).highest == 0


# --- ICANS in children under 12 (ASTCT 2019: CAPD in place of ICE) -----------------------------


@pytest.mark.parametrize(
    ("capd", "grades"),
    [(None, (0, 0)), (0, (0, 0)), (1, (1, 2)), (8, (1, 2)), (9, (3, 3)), (32, (3, 3))],
)
def test_capd_1_to_8_is_grade_1_or_2_and_9_or_more_grade_3(capd, grades):
    assert icans_grade(ICANSFindings(capd_score=capd), ICANS) == grades


@pytest.mark.parametrize(
    "signs", [("cranial_nerve_vi_palsy",), ("papilloedema",), ("cushings_triad",), ("papilloedema", "cushings_triad")]
)
def test_signs_of_raised_intracranial_pressure_are_grade_4(signs):
    assert icans_grade(ICANSFindings(raised_icp_signs=signs), ICANS) == (4, 4)
    assert icans_grade(ICANSFindings(capd_score=4, raised_icp_signs=signs), ICANS) == (4, 4)


@pytest.mark.parametrize(
    ("changes", "grades"),
    [
        ({"capd_score": 5, "consciousness": "awakens_spontaneously"}, (1, 2)),  # both domains allow grade 1
        ({"capd_score": 5, "consciousness": "awakens_to_voice"}, (2, 2)),  # at least 2: the range narrows
        ({"capd_score": 5, "seizure": "resolving_rapidly"}, (3, 3)),
        ({"capd_score": 12, "consciousness": "awakens_to_voice"}, (3, 3)),
        ({"capd_score": 12, "cerebral_oedema": "diffuse_or_posturing"}, (4, 4)),
    ],
)
def test_a_capd_range_combines_with_the_other_domains(changes, grades):
    assert icans_grade(ICANSFindings(**changes), ICANS) == grades


def test_the_worst_of_ranges_is_the_highest_lowest_and_the_highest_highest():
    assert worst(GradeRange(1, 2), GradeRange.exactly(0)) == (1, 2)
    assert worst(GradeRange(1, 2), GradeRange.exactly(2), GradeRange(0, 1)) == (2, 2)
    assert worst(GradeRange.exactly(3), GradeRange(1, 2)) == (3, 3)


@pytest.mark.parametrize(
    ("grades", "text", "inside", "outside"), [((2, 2), "2", [2], [1, 3]), ((1, 2), "1-2", [1, 2], [0, 3])]
)
def test_a_grade_range_says_which_grades_it_includes(grades, text, inside, outside):
    assert str(GradeRange(*grades)) == text
    assert all(GradeRange(*grades).includes(g) for g in inside)
    assert not any(GradeRange(*grades).includes(g) for g in outside)


# --- acute GvHD (MAGIC) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skin", "liver", "upper", "lower", "grade"),
    [
        (0, 0, 0, 0, 0),
        # I: skin 1-2 alone
        (1, 0, 0, 0, 1),
        (2, 0, 0, 0, 1),
        # II: skin 3, or any stage-1 liver / upper GI / lower GI
        (3, 0, 0, 0, 2),
        (0, 1, 0, 0, 2),
        (0, 0, 1, 0, 2),
        (0, 0, 0, 1, 2),
        (2, 1, 0, 0, 2),
        (1, 0, 1, 0, 2),
        (3, 1, 1, 1, 2),
        # III: liver or lower GI stage 2-3, skin 0-3
        (0, 2, 0, 0, 3),
        (0, 3, 0, 0, 3),
        (0, 0, 0, 2, 3),
        (0, 0, 0, 3, 3),
        (3, 3, 1, 3, 3),
        (1, 0, 1, 2, 3),
        # IV: skin, liver or lower GI stage 4
        (4, 0, 0, 0, 4),
        (0, 4, 0, 0, 4),
        (0, 0, 0, 4, 4),
        (4, 3, 1, 3, 4),
        (0, 0, 1, 4, 4),
    ],
)
def test_gvhd_overall_grade(skin, liver, upper, lower, grade):
    staging = GvHDStaging(skin_stage=skin, liver_stage=liver, upper_gi_stage=upper, lower_gi_stage=lower)
    assert gvhd_overall_grade(staging) == grade


# --- dispatch -----------------------------------------------------------------------------------

CRS_G3 = CRSFindings(max_temperature_c=39.0, hypotension=True, vasopressors=1)
ICANS_G2 = ICANSFindings(ice_score=5)
GVHD_G4 = GvHDStaging(skin_stage=4)


def test_derived_grade_dispatches_by_category():
    assert derived_grade("CRS", CRS_G3, ICANS_G2, GVHD_G4, GRADING) == (3, 3)
    assert derived_grade("ICANS", CRS_G3, ICANS_G2, GVHD_G4, GRADING) == (2, 2)
    assert derived_grade("GVHD", CRS_G3, ICANS_G2, GVHD_G4, GRADING) == (4, 4)
    assert derived_grade("ICANS", None, ICANSFindings(capd_score=3), None, GRADING) == (1, 2)


@pytest.mark.parametrize(
    ("category", "crs_f", "icans_f", "gvhd_f"),
    [
        ("CRS", None, ICANS_G2, GVHD_G4),
        ("ICANS", CRS_G3, None, GVHD_G4),
        ("GVHD", CRS_G3, ICANS_G2, None),
        ("INFECTION", CRS_G3, ICANS_G2, GVHD_G4),
        ("OTHER", None, None, None),
    ],
)
def test_derived_grade_is_none_without_the_category_findings(category, crs_f, icans_f, gvhd_f):
    assert derived_grade(category, crs_f, icans_f, gvhd_f, GRADING) is None


def test_derived_grade_uses_the_grading_it_is_given():
    grading = Grading(
        crs=CRSGrading(fever_min_c=38.0, low_flow_max_l_min=4.0), icans=ICANSGrading(ice_grade1_min=8, ice_grade2_min=4)
    )
    five_litres = CRSFindings(max_temperature_c=38.4, oxygen_delivery="nasal_cannula", oxygen_flow_l_min=5.0)
    assert derived_grade("CRS", five_litres, None, None, GRADING) == (2, 2)
    assert derived_grade("CRS", five_litres, None, None, grading) == (3, 3)
    assert derived_grade("ICANS", None, ICANSFindings(ice_score=7), None, GRADING) == (1, 1)
    assert derived_grade("ICANS", None, ICANSFindings(ice_score=7), None, grading) == (2, 2)
