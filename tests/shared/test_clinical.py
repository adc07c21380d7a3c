"""The study's clinical definitions, each stated once (shared/clinical.py)."""

from __future__ import annotations

import pytest

from shared import clinical


@pytest.mark.parametrize(
    ("response", "remission"), [("CR", True), ("CRi", True), ("NR", False), ("RELAPSE", False), ("PD", False)]
)
def test_remission_is_cr_or_cri(response, remission):
    assert clinical.in_remission(response) is remission
    assert clinical.enters_long_term_follow_up(response) is remission


def test_no_week12_assessment_means_no_long_term_follow_up():
    assert clinical.enters_long_term_follow_up(None) is False


@pytest.mark.parametrize(("response", "progression"), [("RELAPSE", True), ("PD", True), ("NR", False), ("CR", False)])
def test_relapse_and_progressive_disease_are_progression(response, progression):
    assert clinical.progressed(response) is progression


@pytest.mark.parametrize(
    ("previous", "now", "rose"),
    [
        (40.0, 50.0, True),  # exactly 25 % more
        (40.0, 49.9, False),
        (40.0, 30.0, False),
        (0.0, 0.1, True),  # from none, any rise
        (0.0, 0.0, False),
        (80.0, 100.0, True),
    ],
)
def test_blasts_rose_by_at_least_the_relative_increase(previous, now, rose):
    assert clinical.blasts_rose(previous, now, 25.0) is rose


@pytest.mark.parametrize(("year_of_birth", "on_year", "age"), [(2014, 2025, 11), (2013, 2025, 12), (1980, 2025, 45)])
def test_ages_are_counted_in_calendar_years(year_of_birth, on_year, age):
    assert clinical.age_in_years(year_of_birth, on_year) == age


@pytest.mark.parametrize(
    ("relatedness", "suspected"),
    [("unrelated", False), ("unlikely", False), ("possible", True), ("probable", True), ("definite", True)],
)
def test_possible_and_above_is_suspected(relatedness, suspected):
    assert clinical.suspected(relatedness) is suspected
    assert clinical.at_least(relatedness, "possible") is suspected


@pytest.mark.parametrize(
    ("serious", "suspected", "expected", "susar"),
    [
        (True, True, False, True),
        (True, True, None, False),  # expectedness not yet assessed
        (True, True, True, False),
        (True, False, False, False),
        (False, True, False, False),
    ],
)
def test_a_susar_is_serious_suspected_and_unexpected(serious, suspected, expected, susar):
    assert clinical.susar(serious, suspected, expected) is susar


@pytest.mark.parametrize(
    ("grade", "criteria", "expected"),
    [
        (3, (), False),
        (4, (), True),
        (5, ("death",), True),
        (3, ("life_threatening",), True),
        (3, ("hospitalisation",), False),
    ],
)
def test_fatal_or_life_threatening(grade, criteria, expected):
    assert clinical.fatal_or_life_threatening(grade, criteria) is expected


@pytest.mark.parametrize(
    ("window_completed", "had_dlt", "left_in_window", "counted", "evaluable"),
    [
        (True, False, False, False, True),  # through the window alive and on study
        (False, True, False, False, True),  # a DLT: at once
        (True, True, False, False, True),
        (False, False, False, False, False),  # the window still open
        (True, False, True, False, False),  # left inside the window without a DLT: replaced
        (True, False, True, True, True),  # ... unless the protocol counts early exits
        (False, True, True, False, True),  # a DLT, then left: counts
    ],
)
def test_dlt_evaluable_after_a_dlt_or_the_whole_window_alive_and_on_study(
    window_completed, had_dlt, left_in_window, counted, evaluable
):
    assert (
        clinical.dlt_evaluable(
            had_dlt=had_dlt,
            window_completed=window_completed,
            left_in_window=left_in_window,
            early_exit_evaluable=counted,
        )
        is evaluable
    )


def test_records_about_the_data_are_administrative():
    assert clinical.administrative("DataQueryOpened") and clinical.administrative("LostToFollowUp")
    assert not clinical.administrative("AEReported") and not clinical.administrative("VisitCompleted")


def test_the_vocabularies_are_the_contracts():
    from shared.contract.events import AEFields

    schema = AEFields.model_json_schema()
    assert tuple(schema["properties"]["category"]["enum"]) == clinical.CATEGORIES
    assert tuple(schema["properties"]["relatedness"]["enum"]) == clinical.RELATEDNESS_ORDER
