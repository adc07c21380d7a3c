"""As of a date D, only what had happened by D counts: for random cohorts and a random cut-off, the study
tables, each subject's status, journey view and schedule as of D are the same whether or not the events
dated after D have been recorded."""

from __future__ import annotations

from datetime import date, timedelta
from functools import reduce
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.followup.projections.journey import Journey, apply, status, view
from services.followup.projections.schedule import schedule
from services.followup.study.efficacy import efficacy_table
from services.followup.study.from_journeys import outcome, safety
from services.followup.study.safety import safety_table
from shared.contract.envelope import Envelope
from shared.contract.events import Payload
from tests.services.followup.envelopes import envelope as recorded
from tests.services.followup.histories import LAST_DAY, PROTOCOL, START, Chain, at, histories

# Records about the data, shown as they stand rather than as of the view's date.
ABOUT_THE_DATA: Any = {"queries": True, "open_queries": True, "adverse_events": {"__all__": {"reports_submitted"}}}


def envelope(subject_id: str, payload: Payload, on: date) -> Envelope:
    return recorded(payload, at(on), subject_id=subject_id)


def fold(subject_id: str, events: Chain) -> Journey:
    return reduce(lambda j, e: apply(j, envelope(subject_id, *e), e[0]), events, Journey(subject_id=subject_id))


# --- the property ---------------------------------------------------------------------------------------


def as_of(journeys: list[Journey], on: date) -> tuple[object, ...]:
    subjects = [s for j in journeys if (s := safety(j, PROTOCOL, on)) is not None]
    outcomes = [o for j in journeys if (o := outcome(j, on)) is not None]
    per_subject = [
        (status(j, on, PROTOCOL), view(j, on, PROTOCOL).model_dump(exclude=ABOUT_THE_DATA), schedule(j, PROTOCOL, on))
        for j in journeys
    ]
    return safety_table(subjects), efficacy_table(outcomes, on), per_subject


@settings(max_examples=100, deadline=None, database=None)  # no .hypothesis/ left in the repo
@given(cohort=st.lists(histories(), min_size=1, max_size=5), cut_off=st.integers(0, LAST_DAY + 90))
def test_events_dated_after_the_cut_off_change_nothing_as_of_it(cohort: list[Chain], cut_off: int) -> None:
    """The events of each subject dated after the cut-off D are added to what had happened by D; the
    tables and each subject's status, view and schedule as of D stay the same.

    Corrections (AECorrected, InfusionCorrected) are not among them: a correction rewrites what is known
    about the past, with a reason (a corrected onset or infusion moves an AE or day 0 to another date),
    so a table as of D may rightly change when one is recorded. Data queries and safety reports are
    records about the data: they may be added, but the view shows them as they stand, not as of D.
    """
    on = START + timedelta(days=cut_off)
    ids = [f"UCT-01-{i:03d}" for i in range(len(cohort))]
    everything = [fold(sid, events) for sid, events in zip(ids, cohort, strict=True)]
    by_cut_off = [fold(sid, [e for e in events if e[1] <= on]) for sid, events in zip(ids, cohort, strict=True)]
    assert as_of(everything, on) == as_of(by_cut_off, on)
