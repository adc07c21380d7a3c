"""Safety tables: DLT-evaluable denominator, worst-grade counting, SAEs and the SUSAR rule."""

import itertools
import json

import pytest

from services.followup.study.inputs import AESummary, SubjectSafety
from services.followup.study.safety import safety_table

_ids = itertools.count(1)


def ae(category="OTHER", grade=1, *, serious=False, suspected=False, expected=True, dlt=False) -> AESummary:
    return AESummary(
        ae_id=f"AE-{next(_ids)}",
        category=category,
        grade=grade,
        serious=serious,
        suspected=suspected,
        expected=expected,
        fatal_or_life_threatening=grade >= 4,
        dlt=dlt,
    )


def person(sid, *aes, evaluable=True, before_treatment=0) -> SubjectSafety:
    return SubjectSafety(subject_id=sid, dlt_evaluable=evaluable, aes=aes, not_treatment_emergent=before_treatment)


def test_dlt_rate_is_over_dlt_evaluable_subjects():
    table = safety_table(
        [
            person("dlt", ae("CRS", 3, dlt=True)),
            person("clean"),
            person("window-open", ae("CRS", 1), evaluable=False),  # not yet evaluable: out of both counts
            person("dlt-flag-lagging", ae("ICANS", 4, dlt=True), evaluable=False),  # a DLT makes it evaluable
        ]
    )
    assert (table.dlt.subjects_with_dlt, table.dlt.dlt_evaluable) == (2, 3)
    assert table.dlt.rate == pytest.approx(2 / 3)
    assert table.subjects == 4


def test_dlt_rate_without_evaluable_subjects_is_undefined():
    table = safety_table([person("a", evaluable=False)])
    assert (table.dlt.subjects_with_dlt, table.dlt.dlt_evaluable, table.dlt.rate) == (0, 0, None)


def test_crs_and_icans_count_each_subject_once_at_the_worst_grade():
    table = safety_table(
        [
            person("a", ae("CRS", 1), ae("CRS", 3), ae("CRS", 2)),
            person("b", ae("CRS", 1), ae("ICANS", 4)),
            person("c", ae("INFECTION", 5)),  # no CRS, no ICANS: grade 0 in both
            person("d", ae("CRS", 5)),
        ]
    )
    assert table.crs.by_grade == {0: 1, 1: 1, 2: 0, 3: 1, 4: 0, 5: 1}
    assert (table.crs.subjects, table.crs.any_grade, table.crs.grade_3_or_higher) == (4, 3, 2)
    assert table.icans.by_grade == {0: 3, 1: 0, 2: 0, 3: 0, 4: 1, 5: 0}
    assert (table.icans.subjects, table.icans.any_grade, table.icans.grade_3_or_higher) == (4, 1, 1)


def test_ae_incidence_by_category_and_worst_grade():
    table = safety_table(
        [
            person("a", ae("INFECTION", 2), ae("INFECTION", 4), ae("CYTOPENIA", 3)),
            person("b", ae("INFECTION", 2)),
            person("c", ae("TUMOUR_LYSIS", 3)),  # a category outside the usual list is still reported
            person("d"),
        ]
    )
    incidence = {i.category: i for i in table.ae_incidence}
    assert list(incidence) == ["CRS", "ICANS", "GVHD", "INFECTION", "CYTOPENIA", "OTHER", "TUMOUR_LYSIS"]
    assert incidence["INFECTION"].subjects == 2
    assert incidence["INFECTION"].by_worst_grade == {1: 0, 2: 1, 3: 0, 4: 1, 5: 0}
    assert incidence["CYTOPENIA"].by_worst_grade[3] == 1
    assert incidence["TUMOUR_LYSIS"].subjects == 1
    assert incidence["GVHD"].subjects == 0 and sum(incidence["GVHD"].by_worst_grade.values()) == 0


def test_saes_count_subjects_and_events_and_severity_is_not_seriousness():
    table = safety_table(
        [
            person("a", ae("CRS", 2, serious=True), ae("INFECTION", 3, serious=True)),
            person("b", ae("CYTOPENIA", 4)),  # grade 4 but not serious: not an SAE
            person("c", ae("ICANS", 1, serious=True)),
        ]
    )
    assert (table.sae.subjects, table.sae.events) == (2, 3)


def test_susar_is_serious_suspected_and_unexpected():
    table = safety_table(
        [
            person(
                "a", ae(serious=True, suspected=True, expected=False), ae(serious=True, suspected=True, expected=False)
            ),
            person("b", ae(serious=True, suspected=True, expected=True)),  # expected: not a SUSAR
            person("c", ae(serious=True, suspected=False, expected=False)),  # not suspected
            person("d", ae(serious=False, suspected=True, expected=False)),  # not serious
            person("e", ae(serious=True, suspected=True, expected=None)),  # expectedness not assessed yet
            person(
                "f", ae(serious=True, suspected=True, expected=None), ae(serious=True, suspected=True, expected=False)
            ),
        ]
    )
    assert (table.susar.subjects, table.susar.events) == (2, 3)
    assert (table.awaiting_expectedness.subjects, table.awaiting_expectedness.events) == (2, 2)
    assert (table.sae.subjects, table.sae.events) == (5, 7)


def test_rejects_a_grade_outside_ctcae():
    with pytest.raises(ValueError, match="grade"):
        safety_table([person("a", ae("CRS", 0))])


def test_empty_cohort_and_json():
    table = safety_table([])
    assert table.subjects == 0 and table.crs.by_grade == {g: 0 for g in range(6)}
    dumped = json.loads(table.model_dump_json())
    assert dumped["crs"]["by_grade"]["0"] == 0 and dumped["dlt"]["rate"] is None


def test_the_table_says_which_aes_it_counts_and_how_many_it_left_out():
    table = safety_table([person("a", ae("CRS", 2), before_treatment=2), person("b", before_treatment=1), person("c")])
    assert table.aes_not_treatment_emergent == 3
    assert "Treatment-emergent" in table.ae_counting and "first lymphodepletion day" in table.ae_counting
    assert "worst grade reached by the cut-off" in table.ae_counting
    assert table.crs.any_grade == 1
