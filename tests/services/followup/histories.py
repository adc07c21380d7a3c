"""Random subject histories, for property tests: each subject's events from every stream, in an order the
topics could deliver them (each stream in its own order), with clinically plausible dates."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from typing import Any, get_args

from hypothesis import strategies as st

from shared import clinical
from shared.contract.events import (
    AEReported,
    AEUpdated,
    AgentDose,
    ConsentWithdrawn,
    DataQueryAnswered,
    DataQueryClosed,
    DataQueryOpened,
    DataQueryUpdated,
    Enrolled,
    LongTermFollowUpStarted,
    LostToFollowUp,
    LymphodepletionGiven,
    Payload,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    SurvivalStatusRecorded,
    UCARTInfused,
    VisitCompleted,
)
from shared.protocol import load_protocol

PROTOCOL = load_protocol()
START = date(2025, 1, 6)  # every subject is enrolled on the first day, then treated up to 60 days later
LAST_DAY = 420  # study days generated
FLU = LymphodepletionGiven(agents=(AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),))
SAFETY_VISITS = sorted(v.code for v in PROTOCOL.followup.visits if v.kind == "safety")
PERSISTENCE_VISITS = sorted(v.code for v in PROTOCOL.followup.visits if v.kind == "persistence")
SURVIVAL_VISITS = sorted(v.code for v in PROTOCOL.followup.visits if v.kind == "survival")
Event = tuple[Payload, date]
Chain = list[Event]  # events one stream records in this order (an AE's report before its updates)


def at(on: date) -> datetime:
    return datetime(on.year, on.month, on.day, 10, tzinfo=UTC)


# --- random histories ---------------------------------------------------------------------------------


@st.composite
def ae_chains(draw: st.DrawFn, day: Any, last_day: int) -> list[Chain]:
    """An AE (onset from the day after enrolment), its updates in any date order, reports and a query."""
    onset = draw(st.integers(-11, last_day))
    serious = draw(st.booleans())
    report = AEReported(
        term="Adverse event",
        category=draw(st.sampled_from(clinical.CATEGORIES)),
        grade=draw(st.integers(1, 5)),
        serious=serious,
        seriousness_criteria=("hospitalisation",) if serious else (),
        relatedness=draw(st.sampled_from(clinical.RELATEDNESS_ORDER)),
        expected=draw(st.none() | st.booleans()),
        aware_at=at(day(onset)),
    )
    outcomes = st.sampled_from(["recovering", "recovered", "not_recovered"])
    changes = st.tuples(st.integers(1, 5), st.none() | outcomes) | st.tuples(st.none(), outcomes)
    updates: Chain = [
        (AEUpdated(ae_id=report.ae_id, grade=grade, outcome=result), day(draw(st.integers(onset, last_day))))
        for grade, result in draw(st.lists(changes, max_size=3))
    ]
    if serious:
        kind = draw(st.sampled_from(["sae_to_sponsor", "susar_to_regulator"]))
        received = day(draw(st.integers(onset, last_day + 30)))
        updates.append((SafetyReportSubmitted(ae_id=report.ae_id, report=kind, received_at=at(received)), received))
    chains = [[(report, day(onset)), *updates]]
    if draw(st.booleans()):
        chains.append(draw(query_chain(report, day)))
    return chains


@st.composite
def query_chain(draw: st.DrawFn, report: AEReported, day: Any) -> Chain:
    opened = DataQueryOpened(ae_id=report.ae_id, field="grade", recorded_value="1", expected_value="2", text="Check")
    later = [
        DataQueryAnswered(query_id=opened.query_id, answer="Checked"),
        DataQueryUpdated(query_id=opened.query_id, recorded_value="2", expected_value="3", text="Check again"),
        DataQueryClosed(query_id=opened.query_id, resolution="Accepted"),
    ]
    steps = draw(st.lists(st.sampled_from(later), max_size=3))
    return [(p, day(draw(st.integers(-11, LAST_DAY + 30)))) for p in [opened, *steps]]


def responses(last_day: int) -> st.SearchStrategy[Chain]:
    return st.lists(
        st.tuples(
            st.sampled_from(get_args(clinical.Timepoint)),
            st.sampled_from(clinical.RESPONSES),
            st.integers(min(20, last_day), last_day),
        ),
        max_size=6,
    ).map(lambda drawn: [(assessment(tp, response), day) for tp, response, day in drawn])  # days: study days


def assessment(timepoint: str, response: str) -> ResponseAssessed:
    return ResponseAssessed(
        timepoint=timepoint, response=response, marrow_blasts_pct=1.0 if clinical.in_remission(response) else 50.0
    )


@st.composite
def histories(draw: st.DrawFn) -> Chain:
    """One subject's events in an order its streams could deliver them."""
    day0 = START + timedelta(days=12 + draw(st.integers(0, 60)))

    def day(n: int) -> date:
        return day0 + timedelta(days=n)

    died = draw(st.none() | st.integers(1, LAST_DAY))
    last_day = died or LAST_DAY  # nothing clinical after a death
    days = st.integers(1, last_day)
    enrolment = Enrolled(
        site_id="01",
        consent_signed_on=START,
        year_of_birth=1980,
        sex="F",
        disease_status="relapsed",
        cd19_positive=True,
    )
    chains: list[Chain] = [[(enrolment, START)]]
    if draw(st.integers(0, 5)):  # most subjects are treated
        infusion = UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="L", donor_id="D")
        chains.append([(FLU, day(-5)), (FLU, day(-4)), (FLU, day(-3)), (infusion, day(0))])
    for _ in range(draw(st.integers(0, 4))):
        chains.extend(draw(ae_chains(day, last_day)))
    chains.append([(p, day(n)) for p, n in draw(responses(last_day))])
    for code in draw(st.lists(st.sampled_from(SAFETY_VISITS), unique=True, max_size=4)):
        chains.append([(VisitCompleted(visit_code=code), day(draw(days)))])
    for code in draw(st.lists(st.none() | st.sampled_from(PERSISTENCE_VISITS), max_size=3)):
        if code is None or all(code != p.visit_code for c in chains for p, _ in c if isinstance(p, PersistenceSampled)):
            chains.append([(PersistenceSampled(visit_code=code, flow_car_pct_of_cd3=1.0), day(draw(days)))])
    for _ in range(draw(st.integers(0, 2))):
        chains.append([(SubsequentTherapyStarted(therapy="allo_hsct"), day(draw(days)))])
    for code in draw(st.lists(st.none() | st.sampled_from(SURVIVAL_VISITS), max_size=3)):
        chains.append([(SurvivalStatusRecorded(status="alive", method="phone", visit_code=code), day(draw(days)))])
    if draw(st.booleans()):
        chains.append([(LongTermFollowUpStarted(week12_response="CR"), day(draw(st.integers(84, last_day + 84))))])
    chains.extend(draw(exits(day, last_day)))
    if died is not None:
        news = SurvivalStatusRecorded(status="dead", method="phone", died_on=day(died), primary_cause="other")
        chains.append([(SubjectDied(primary_cause="other"), day(died)), (news, day(died + draw(st.integers(0, 30))))])
    return interleave(chains, draw(st.randoms(use_true_random=False)))


@st.composite
def exits(draw: st.DrawFn, day: Any, last_day: int) -> list[Chain]:
    """At most one withdrawal, loss to follow-up or completion (death apart)."""
    leaving = draw(st.sampled_from(["stays", "withdrawn", "lost", "completed"]))
    on = draw(st.integers(1, last_day))
    if leaving == "withdrawn":
        return [[(ConsentWithdrawn(withdrawal_reason="moved"), day(on))]]
    if leaving == "lost":
        return [[(LostToFollowUp(last_contact_on=day(draw(st.integers(0, on)))), day(on))]]
    if leaving == "completed":
        return [[(StudyCompleted(completed="main_follow_up"), day(on))]]
    return []


def interleave(chains: list[Chain], rng: random.Random) -> Chain:
    """A random merge of the chains, each kept in its own order (as the topics deliver)."""
    queues = [list(c) for c in chains if c]
    merged = []
    while queues:
        queue = rng.choice(queues)
        merged.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return merged
