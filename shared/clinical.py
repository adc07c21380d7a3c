"""The study's clinical definitions, each stated once (DOMAIN.md).

The rules (services' domain.py), the projections (journey, schedule, reporting clocks) and the study
tables all take these words and tests from here, so a definition cannot drift between the side that
records an event and the side that counts it. Pure: no I/O, and nothing imported from the rest of
the code base (the contract builds on it).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal, get_args

# --- vocabularies ---------------------------------------------------------------------------------

AECategory = Literal["CRS", "ICANS", "GVHD", "INFECTION", "CYTOPENIA", "OTHER"]
Relatedness = Literal["unrelated", "unlikely", "possible", "probable", "definite"]

CATEGORIES: tuple[AECategory, ...] = get_args(AECategory)  # in the order tables list them
RELATEDNESS_ORDER: tuple[Relatedness, ...] = get_args(Relatedness)  # from least to most related

# --- response -------------------------------------------------------------------------------------

ResponseCode = Literal["CR", "CRi", "NR", "RELAPSE", "PD"]
RESPONSES: tuple[ResponseCode, ...] = get_args(ResponseCode)
REMISSION = frozenset({"CR", "CRi"})  # complete remission, with or without full count recovery
# What ends progression-free survival (with death): a relapse after remission, or progressive disease
# in a subject never in remission.
PROGRESSION = frozenset({"RELAPSE", "PD"})

# Disease assessments: weeks 4, 8, 12; months 6, 9, 12 in long-term follow-up; or unscheduled.
Timepoint = Literal["W4", "W8", "W12", "M6", "M9", "M12", "UNSCHEDULED"]
LONG_TERM_TIMEPOINTS = frozenset({"M6", "M9", "M12"})


def response_code(response: str) -> ResponseCode:
    """A response as read back from a read model (plain text there), checked against the vocabulary."""
    for code in RESPONSES:
        if response == code:
            return code
    raise ValueError(f"unknown response {response!r}; expected one of {', '.join(RESPONSES)}")


def in_remission(response: str) -> bool:
    return response in REMISSION


def progressed(response: str) -> bool:
    return response in PROGRESSION


def blasts_rose(previous_pct: float, now_pct: float, min_increase_pct: float) -> bool:
    """Progressive disease by blasts: a rise of at least `min_increase_pct` percent over the previous
    assessment (relative; from 0, any rise)."""
    return now_pct > previous_pct and now_pct >= previous_pct * (1 + min_increase_pct / 100)


def enters_long_term_follow_up(week12_response: str | None) -> bool:
    """Long-term follow-up (to month 12) is for subjects in remission at the week-12 assessment."""
    return week12_response is not None and in_remission(week12_response)


# --- adverse events -------------------------------------------------------------------------------


def suspected(relatedness: Relatedness) -> bool:
    """Possibly related to the product or more (ICH E2A): what makes a serious AE a suspected reaction."""
    return RELATEDNESS_ORDER.index(relatedness) >= RELATEDNESS_ORDER.index("possible")


def at_least(relatedness: Relatedness, least: Relatedness) -> bool:
    return RELATEDNESS_ORDER.index(relatedness) >= RELATEDNESS_ORDER.index(least)


def susar(serious: bool, is_suspected: bool, expected: bool | None) -> bool:
    """A suspected unexpected serious adverse reaction: serious, suspected, and not listed in the
    investigator's brochure (an AE whose expectedness is not yet assessed is not one yet)."""
    return serious and is_suspected and expected is False


def fatal_or_life_threatening(worst_grade: int, seriousness_criteria: Iterable[str]) -> bool:
    """The 7-day SUSAR clock (21 CFR 312.32) rather than the 15-day one."""
    return worst_grade >= 4 or bool({"death", "life_threatening"} & set(seriousness_criteria))


# --- DLT ------------------------------------------------------------------------------------------


def dlt_evaluable(*, had_dlt: bool, window_completed: bool, left_in_window: bool, early_exit_evaluable: bool) -> bool:
    """A subject counts in the DLT rate once a DLT occurred, or once they completed the window alive
    and on study. One who left inside the window (death, withdrawal, loss) without a DLT does not,
    unless the protocol counts early exits (then from the day they left)."""
    if had_dlt:
        return True
    if left_in_window:
        return early_exit_evaluable
    return window_completed


# --- age -----------------------------------------------------------------------------------------

PAEDIATRIC_ICANS_BELOW_YEARS = 12  # ASTCT 2019: CAPD in place of ICE under 12 years of age


def age_in_years(year_of_birth: int, on_year: int) -> int:
    """Age counted in calendar years: only the year of birth is recorded (it can be one more than the
    true age, as at enrolment)."""
    return on_year - year_of_birth


# --- records --------------------------------------------------------------------------------------

# Records about the data rather than about the subject: their dates are not clinical contact (a loss
# to follow-up carries its own last contact date).
ADMINISTRATIVE = frozenset(
    {
        "DataQueryOpened",
        "DataQueryUpdated",
        "DataQueryAnswered",
        "DataQueryClosed",
        "SafetyReportSubmitted",
        "LongTermFollowUpStarted",
        "LostToFollowUp",
    }
)


def administrative(event_type: str) -> bool:
    return event_type in ADMINISTRATIVE
