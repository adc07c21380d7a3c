"""The journey projection: fold order across sources, status on a date, and the journey view."""

import random
from datetime import UTC, date, datetime, timedelta
from functools import reduce
from uuid import uuid4

import pytest

from services.followup.projections.journey import Journey, apply, status, view
from shared.contract.envelope import Envelope, RecordedBy
from shared.contract.events import (
    AEReported,
    AgentDose,
    ConsentWithdrawn,
    Enrolled,
    LymphodepletionGiven,
    Payload,
    ResponseAssessed,
    ScreenFailed,
    SubjectDied,
    UCARTInfused,
    VisitCompleted,
)
from shared.protocol import load_protocol

PROTOCOL = load_protocol()  # DLT window to day 28, main follow-up to day 84, long-term to day 365
SUBJECT = "UCT-03-004"
DAY0 = date(2025, 3, 12)
FLU = LymphodepletionGiven(agents=(AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),))


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def envelope(payload: Payload, on: date, stream_version: int = 1) -> Envelope:
    return Envelope(
        event_id=uuid4(), event_type=payload.event_type, schema_version=payload.schema_version, subject_id=SUBJECT,
        source=payload.source, stream_version=stream_version,
        occurred_at=datetime(on.year, on.month, on.day, 10, tzinfo=UTC), recorded_at=datetime.now(UTC),
        recorded_by=RecordedBy(user_id="inv-1", role="investigator"), correlation_id=uuid4(),
        protocol_version=PROTOCOL.version, payload=payload.model_dump(mode="json"),
    )


def fold(events: list[tuple[Payload, date]]) -> Journey:
    envelopes = [envelope(p, on, i) for i, (p, on) in enumerate(events, start=1)]
    return reduce(lambda j, e: apply(j, e, e.typed_payload()), envelopes, Journey(subject_id=SUBJECT))


def enrolled() -> tuple[Payload, date]:
    return Enrolled(site_id="03", consent_signed_on=day(-12), year_of_birth=1975, sex="M",
                    disease_status="refractory", cd19_positive=True), day(-10)


def resp(timepoint: str, result: str, on: date) -> tuple[Payload, date]:
    return ResponseAssessed(timepoint=timepoint, response=result, marrow_blasts_pct=50 if result in ("NR", "RELAPSE")
                            else 1, mrd_negative=result == "CR"), on


def infused_journey(*extra: tuple[Payload, date]) -> Journey:
    infusion = UCARTInfused(dose_cells_per_kg=2e7, dose_level=2, product_lot="L1", donor_id="D1")
    return fold([enrolled(), (FLU, day(-5)), (FLU, day(-4)), (FLU, day(-3)), (infusion, DAY0), *extra])


# --- apply --------------------------------------------------------------------------------------

BY_SOURCE = {
    "enrollment": [enrolled(), (ConsentWithdrawn(withdrawal_reason="moved away"), day(200))],
    "treatment": [(FLU, day(-5)), (FLU, day(-4)), (FLU, day(-3)),
                  (UCARTInfused(dose_cells_per_kg=2e7, dose_level=2, product_lot="L1", donor_id="D1"), DAY0)],
    "followup": [
        (AEReported(term="CRS", category="CRS", grade=2, serious=False, relatedness="probable"), day(1)),
        (AEReported(term="CRS", category="CRS", grade=3, serious=True, relatedness="definite"), day(2)),
        (AEReported(term="ICANS", category="ICANS", grade=1, serious=False, relatedness="possible"), day(3)),
        (AEReported(term="Fever", category="INFECTION", grade=4, serious=True, relatedness="unlikely"), day(4)),
        (VisitCompleted(visit_code="D7"), day(7)),
        resp("W4", "CRi", day(28)), resp("W8", "CR", day(56)), resp("W12", "RELAPSE", day(84)),
        (SubjectDied(primary_cause="disease_progression"), day(210)),
    ],
}


def interleaving(rng: random.Random) -> list[tuple[Payload, date]]:
    """A random merge of the sources' streams, each source kept in its own order (as Kafka delivers)."""
    queues = {source: list(events) for source, events in BY_SOURCE.items()}
    merged = []
    while queues:
        source = rng.choice(sorted(queues))
        merged.append(queues[source].pop(0))
        if not queues[source]:
            del queues[source]
    return merged


def test_fold_collects_the_facts_of_every_source():
    j = fold([e for events in BY_SOURCE.values() for e in events])
    assert (j.site_id, j.enrolled_on, j.consent_signed_on) == ("03", day(-10), day(-12))
    assert j.lymphodepletion_days == [day(-5), day(-4), day(-3)]
    assert (j.infused_on, j.dose_cells_per_kg) == (DAY0, 2e7)
    assert (j.ae_count, j.serious_ae_count, j.worst_crs_grade, j.worst_icans_grade) == (4, 2, 3, 1)
    assert [(r.timepoint, r.response, r.assessed_on) for r in j.responses] == [
        ("W4", "CRi", day(28)), ("W8", "CR", day(56)), ("W12", "RELAPSE", day(84))]
    assert j.visits_completed == {"D7": day(7)}
    assert (j.withdrawn_on, j.died_on) == (day(200), day(210))


@pytest.mark.parametrize("seed", range(25))
def test_apply_does_not_depend_on_the_order_across_sources(seed):
    in_order = fold([e for events in BY_SOURCE.values() for e in events])
    shuffled = interleaving(random.Random(seed))
    assert fold(shuffled) == in_order
    assert fold(list(reversed(shuffled))) == in_order  # responses on distinct days, so even this holds


def test_apply_returns_a_new_journey_and_leaves_the_input_alone():
    before = infused_journey()
    payload, on = resp("W4", "CR", day(28))
    after = apply(before, envelope(payload, on), payload)
    assert before.responses == [] and len(after.responses) == 1


def test_same_ld_day_twice_counts_once():
    assert fold([(FLU, day(-5)), (FLU, day(-5))]).lymphodepletion_days == [day(-5)]


# --- status -------------------------------------------------------------------------------------


def test_status_before_infusion():
    assert status(Journey(subject_id=SUBJECT), DAY0, PROTOCOL) == "screening"
    assert status(fold([enrolled()]), DAY0, PROTOCOL) == "enrolled"
    assert status(fold([enrolled(), (FLU, day(-5))]), DAY0, PROTOCOL) == "lymphodepleting"
    failed = fold([(ScreenFailed(site_id="03", failure_reason="CD19 negative"), day(-10))])
    assert status(failed, DAY0, PROTOCOL) == "screen_failed"


@pytest.mark.parametrize(("study_day", "expected"), [(0, "infused"), (28, "infused"), (29, "follow_up"),
                                                     (84, "follow_up")])
def test_status_in_the_dlt_window_and_main_follow_up(study_day, expected):
    assert status(infused_journey(resp("W12", "CR", day(84))), day(study_day), PROTOCOL) == expected


@pytest.mark.parametrize(("w12", "expected"), [("CR", "long_term_follow_up"), ("CRi", "long_term_follow_up"),
                                               ("NR", "completed"), ("RELAPSE", "completed")])
def test_status_after_week_12_depends_on_w12_remission(w12, expected):
    journey = infused_journey(resp("W12", w12, day(84)))
    assert status(journey, day(84), PROTOCOL) == "follow_up"
    assert status(journey, day(85), PROTOCOL) == expected


def test_missing_w12_keeps_the_subject_in_follow_up():
    journey = infused_journey(resp("W4", "CR", day(28)), resp("UNSCHEDULED", "CR", day(80)))
    assert status(journey, day(85), PROTOCOL) == "follow_up"
    assert status(journey, day(400), PROTOCOL) == "follow_up"


def test_long_term_follow_up_ends_at_month_12():
    journey = infused_journey(resp("W12", "CR", day(84)))
    assert status(journey, day(365), PROTOCOL) == "long_term_follow_up"
    assert status(journey, day(366), PROTOCOL) == "completed"


def test_withdrawal_and_death_override_the_treatment_state():
    withdrawn = infused_journey((ConsentWithdrawn(withdrawal_reason="moved"), day(40)))
    assert status(withdrawn, day(41), PROTOCOL) == "withdrawn"
    dead = fold([*BY_SOURCE["enrollment"], (SubjectDied(primary_cause="other"), day(210))])
    assert status(dead, day(211), PROTOCOL) == "died"


# --- view ---------------------------------------------------------------------------------------


def test_view_best_and_latest_response():
    # delivered out of date order: latest means the last assessed, not the last received
    journey = infused_journey(resp("W12", "RELAPSE", day(84)), resp("W4", "CRi", day(28)), resp("W8", "CR", day(56)))
    v = view(journey, day(90), PROTOCOL)
    assert (v.best_response.timepoint, v.best_response.response) == ("W8", "CR")
    assert (v.latest_response.timepoint, v.latest_response.response) == ("W12", "RELAPSE")
    assert (v.status, v.study_day, v.as_of, v.infused_on) == ("completed", 90, day(90), DAY0)


def test_view_best_response_is_the_first_of_equal_rank():
    journey = infused_journey(resp("W8", "CR", day(56)), resp("W4", "CR", day(28)), resp("W12", "CRi", day(84)))
    v = view(journey, day(90), PROTOCOL)
    assert (v.best_response.timepoint, v.latest_response.timepoint) == ("W4", "W12")


def test_view_before_any_response_or_infusion():
    v = view(fold([enrolled()]), DAY0, PROTOCOL)
    assert (v.status, v.study_day, v.best_response, v.latest_response) == ("enrolled", None, None, None)


def test_status_on_a_date_counts_only_what_had_happened_by_then():
    dead = infused_journey(resp("W4", "CR", day(28)), (SubjectDied(primary_cause="other"), day(40)))
    assert status(dead, day(39), PROTOCOL) == "follow_up"
    assert status(dead, day(40), PROTOCOL) == "died"
    assert status(dead, day(-1), PROTOCOL) == "lymphodepleting"  # infused on day 0, not yet
    w12_late = infused_journey(resp("W12", "CR", day(90)))
    assert status(w12_late, day(89), PROTOCOL) == "follow_up"
    assert status(w12_late, day(90), PROTOCOL) == "long_term_follow_up"
