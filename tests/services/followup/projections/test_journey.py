"""The journey projection: fold order across sources, status on a date, and the journey view."""

import random
from datetime import UTC, date, datetime, timedelta
from functools import reduce

import pytest

from services.followup.projections.journey import Journey, apply, status, view
from shared.contract.envelope import Envelope
from shared.contract.events import (
    AECorrected,
    AEReported,
    AEUpdated,
    AgentDose,
    ConsentWithdrawn,
    DataQueryAnswered,
    DataQueryClosed,
    DataQueryOpened,
    DataQueryUpdated,
    Enrolled,
    InfusionCorrected,
    LongTermFollowUpStarted,
    LostToFollowUp,
    LymphodepletionGiven,
    Payload,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    ScreenFailed,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    SurvivalStatusRecorded,
    UCARTInfused,
    VisitCompleted,
)
from shared.contract.findings import ICANSFindings
from shared.contract.previous import AEReportedV1
from shared.contract.upcasting import upcast
from shared.protocol import load_protocol
from tests.services.followup.envelopes import envelope as recorded

PROTOCOL = load_protocol()  # DLT window to day 28, main follow-up to day 84, long-term to day 365
SUBJECT = "UCT-03-004"
DAY0 = date(2025, 3, 12)
FLU = LymphodepletionGiven(agents=(AgentDose(agent="fludarabine", dose=30, unit="mg/m2"),))
INFUSION = UCARTInfused(dose_cells_per_kg=2e7, dose_level=2, product_lot="L1", donor_id="D1")


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def at(on: date, hour: int = 10) -> datetime:
    return datetime(on.year, on.month, on.day, hour, tzinfo=UTC)


def envelope(payload: Payload, on: date, stream_version: int = 1) -> Envelope:
    return recorded(payload, at(on), subject_id=SUBJECT, recorded_at=at(on, 11), stream_version=stream_version)


def fold(events: list[tuple[Payload, date]], journey: Journey | None = None) -> Journey:
    """Fold as the consumer does: validate the envelope's payload, upcast it, apply it."""
    envelopes = [envelope(p, on, i) for i, (p, on) in enumerate(events, start=1)]
    return reduce(
        lambda j, e: apply(j, e, upcast(e.typed_payload(), e.occurred_at)),
        envelopes,
        journey or Journey(subject_id=SUBJECT),
    )


def enrolled() -> tuple[Payload, date]:
    return Enrolled(
        site_id="03",
        consent_signed_on=day(-12),
        year_of_birth=1975,
        sex="M",
        disease_status="refractory",
        cd19_positive=True,
    ), day(-10)


def resp(timepoint: str, result: str, on: date) -> tuple[Payload, date]:
    return ResponseAssessed(
        timepoint=timepoint,
        response=result,
        marrow_blasts_pct=50 if result in ("NR", "RELAPSE", "PD") else 1,
        mrd_negative=result == "CR",
    ), on


def ae(on: date, **changes) -> AEReported:
    return AEReported(
        **(
            {
                "term": "CRS",
                "category": "CRS",
                "grade": 2,
                "serious": False,
                "relatedness": "probable",
                "aware_at": at(on, 12),
            }
            | changes
        )
    )


def infused_journey(*extra: tuple[Payload, date]) -> Journey:
    return fold([enrolled(), (FLU, day(-5)), (FLU, day(-4)), (FLU, day(-3)), (INFUSION, DAY0), *extra])


# --- apply --------------------------------------------------------------------------------------

CRS_V1 = AEReportedV1(term="CRS", category="CRS", grade=2, serious=False, relatedness="probable")
CRS_SERIOUS = ae(day(2), grade=3, serious=True, seriousness_criteria=("hospitalisation",), relatedness="definite")
ICANS = ae(day(3), term="ICANS", category="ICANS", grade=1, relatedness="possible", icans=ICANSFindings(ice_score=5))
QUERY = DataQueryOpened(ae_id=ICANS.ae_id, field="grade", recorded_value="1", expected_value="2", text="Check")
INFECTION = ae(
    day(4),
    term="Sepsis",
    category="INFECTION",
    grade=4,
    serious=True,
    seriousness_criteria=("life_threatening",),
    relatedness="unlikely",
)
BY_SOURCE = {
    "enrollment": [enrolled(), (ConsentWithdrawn(withdrawal_reason="moved away"), day(200))],
    "treatment": [
        (FLU, day(-5)),
        (FLU, day(-4)),
        (FLU, day(-3)),
        (UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="L1", donor_id="D1"), day(1)),
        (InfusionCorrected(dose_cells_per_kg=2e7, dose_level=2, product_lot="L1", donor_id="D1"), DAY0),
    ],
    "followup": [
        (CRS_V1, day(1)),
        (CRS_SERIOUS, day(2)),
        (ICANS, day(3)),
        (QUERY, day(3)),
        (INFECTION, day(4)),
        (SafetyReportSubmitted(ae_id=CRS_SERIOUS.ae_id, report="sae_to_sponsor", received_at=at(day(2), 20)), day(2)),
        (AEUpdated(ae_id=CRS_SERIOUS.ae_id, grade=4), day(5)),
        (DataQueryAnswered(query_id=QUERY.query_id, answer="ICE was 8"), day(6)),
        (DataQueryClosed(query_id=QUERY.query_id, resolution="Accepted"), day(8)),
        (VisitCompleted(visit_code="D7"), day(7)),
        (PersistenceSampled(visit_code="PERS_D14", qpcr_copies_per_ug_dna=12000.0), day(14)),
        resp("W4", "CRi", day(28)),
        resp("W8", "CR", day(56)),
        resp("W12", "RELAPSE", day(84)),
        (SubsequentTherapyStarted(therapy="allo_hsct"), day(100)),
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
    assert (j.infused_on, j.infusion_corrected_from, j.dose_cells_per_kg) == (DAY0, [at(day(1))], 2e7)
    v = view(j, day(220), PROTOCOL)
    assert (v.ae_count, v.serious_ae_count, v.worst_crs_grade, v.worst_icans_grade) == (4, 2, 4, 1)
    assert j.adverse_events[str(CRS_V1.ae_id)].report.aware_at == at(day(1))  # read through the upcaster
    assert j.adverse_events[str(CRS_SERIOUS.ae_id)].reports_submitted == {"sae_to_sponsor": at(day(2), 20)}
    assert (j.queries[str(QUERY.query_id)].status, v.open_queries) == ("closed", 0)
    assert [(r.timepoint, r.response, r.assessed_on) for r in j.responses] == [
        ("W4", "CRi", day(28)),
        ("W8", "CR", day(56)),
        ("W12", "RELAPSE", day(84)),
    ]
    assert j.visits_completed == {"D7": day(7), "PERS_D14": day(14)}
    assert j.subsequent_therapy == [("allo_hsct", day(100))]
    assert (j.withdrawn_on, j.died_on, j.last_known_alive(day(220))) == (day(200), day(210), day(210))


@pytest.mark.parametrize("seed", range(25))
def test_apply_does_not_depend_on_the_order_across_sources(seed):
    in_order = fold([e for events in BY_SOURCE.values() for e in events])
    assert fold(interleaving(random.Random(seed))) == in_order


def test_apply_returns_a_new_journey_and_leaves_the_input_alone():
    before = infused_journey()
    payload, on = resp("W4", "CR", day(28))
    after = apply(before, envelope(payload, on), payload)
    assert before.responses == [] and len(after.responses) == 1


def test_the_latest_clinical_date_is_kept_whatever_the_delivery_order():
    j = infused_journey(
        (SubjectDied(primary_cause="other"), day(210)), (ConsentWithdrawn(withdrawal_reason="moved"), day(200))
    )
    assert max(j.records_per_day) == day(210)


def test_same_ld_day_twice_counts_once():
    assert fold([(FLU, day(-5)), (FLU, day(-5))]).lymphodepletion_days == [day(-5)]


# --- adverse events and queries -----------------------------------------------------------------


def test_updates_raise_the_worst_grade_and_set_the_current_one():
    crs = ae(day(2), grade=2)
    j = infused_journey(
        (crs, day(2)),
        (AEUpdated(ae_id=crs.ae_id, grade=4), day(3)),
        (AEUpdated(ae_id=crs.ae_id, grade=1, outcome="recovering"), day(6)),
    )
    record = j.adverse_events[str(crs.ae_id)]
    assert (record.grade_on(), record.worst_grade_by(), record.outcome_on()) == (1, 4, "recovering")
    j = fold([(AEUpdated(ae_id=crs.ae_id, outcome="recovered"), day(9))], j)
    record = j.adverse_events[str(crs.ae_id)]
    assert (record.grade_on(), record.outcome_on()) == (1, "recovered")
    assert j.worst_grade("CRS") == 4 and j.worst_grade("ICANS") is None


def test_each_grade_keeps_the_day_it_was_reached():
    crs = ae(day(2), grade=2)
    j = infused_journey(
        (crs, day(2)),
        (AEUpdated(ae_id=crs.ae_id, grade=4), day(5)),
        (AEUpdated(ae_id=crs.ae_id, grade=3, outcome="recovering"), day(4)),  # entered late: dated before
        (AEUpdated(ae_id=crs.ae_id, outcome="recovered"), day(9)),
        (AEUpdated(ae_id=crs.ae_id, outcome="not_recovered"), day(3)),  # entered late as well
    )
    record = j.adverse_events[str(crs.ae_id)]
    assert [(g.grade, g.reached_on) for g in record.grade_history()] == [(2, day(2)), (3, day(4)), (4, day(5))]
    assert record.grade_on() == 4  # the latest by date, not the last entered
    # As of a date: only the grades reached by then.
    assert [(record.grade_on(day(n)), record.worst_grade_by(day(n))) for n in (1, 2, 4, 5)] == [
        (None, None),
        (2, 2),
        (3, 3),
        (4, 4),
    ]
    assert [record.outcome_on(day(n)) for n in (2, 3, 4, 8, 9)] == [
        None,
        "not_recovered",
        "recovering",
        "recovering",
        "recovered",
    ]
    assert record.worst_grade_within(day(3), day(4)) == 3  # the grade 2 was reached before the window
    assert [j.worst_grade("CRS", day(n)) for n in (1, 3, 6)] == [None, 2, 4]


def test_a_grade_dated_before_a_corrected_onset_counts_from_the_onset():
    crs = ae(day(2), grade=2)
    later_onset = AECorrected(ae_id=crs.ae_id, **ae(day(5), grade=1).model_dump(exclude={"ae_id"}))
    j = infused_journey((crs, day(2)), (AEUpdated(ae_id=crs.ae_id, grade=3), day(3)), (later_onset, day(5)))
    record = j.adverse_events[str(crs.ae_id)]
    assert [(g.grade, g.reached_on) for g in record.grade_history()] == [(1, day(5)), (3, day(5))]
    assert (record.grade_on(day(4)), record.grade_on(day(5))) == (None, 3)


def test_a_correction_replaces_the_report_and_its_onset():
    crs = ae(day(5), grade=3)
    fix = AECorrected(
        ae_id=crs.ae_id,
        **ae(
            day(4), term="Cytokine release syndrome", grade=2, serious=True, seriousness_criteria=("hospitalisation",)
        ).model_dump(exclude={"ae_id"}),
    )
    j = infused_journey((crs, day(5)), (fix, day(4)))
    record = j.adverse_events[str(crs.ae_id)]
    assert record.report.model_dump() == fix.model_dump(exclude={"ae_id"})
    assert (record.onset_on, record.grade_on(), record.worst_grade_by(), record.corrections) == (day(4), 2, 2, 1)
    v = view(j, day(10), PROTOCOL)
    assert (v.ae_count, v.serious_ae_count, v.worst_crs_grade) == (1, 1, 2)


def test_a_correction_replaces_the_reported_grade_but_keeps_the_updates_since():
    # The correction replaces the grade at onset (2 -> 3); the grade 4 an update reached on day 3 is still
    # the current one (the latest by date; before grades were dated, the correction's grade was current).
    crs = ae(day(2), grade=2)
    fix = AECorrected(ae_id=crs.ae_id, **ae(day(2), grade=3).model_dump(exclude={"ae_id"}))
    j = infused_journey((crs, day(2)), (AEUpdated(ae_id=crs.ae_id, grade=4), day(3)), (fix, day(2)))
    record = j.adverse_events[str(crs.ae_id)]
    assert (record.grade_on(day(2)), record.grade_on(), record.worst_grade_by()) == (3, 4, 4)
    lowered = infused_journey((crs, day(2)), (fix.model_copy(update={"grade": 1}), day(2)))
    assert lowered.adverse_events[str(crs.ae_id)].worst_grade_by() == 1  # no update: the corrected grade is all
    j = fold([(AEUpdated(ae_id=crs.ae_id, grade=4), day(6)), (AEUpdated(ae_id=crs.ae_id, grade=2), day(8))], j)
    record = j.adverse_events[str(crs.ae_id)]
    assert (record.grade_on(), record.worst_grade_by()) == (2, 4)


def test_a_query_is_open_then_answered_then_closed():
    opened = infused_journey((ICANS, day(3)), (QUERY, day(3)))
    q = opened.queries[str(QUERY.query_id)]
    assert (q.status, q.ae_id, q.recorded_value, q.expected_value, q.opened_at) == (
        "open",
        ICANS.ae_id,
        "1",
        "2",
        at(day(3), 11),
    )
    answered = fold([(DataQueryAnswered(query_id=QUERY.query_id, answer="ICE was 8"), day(5))], opened)
    assert (answered.queries[str(QUERY.query_id)].status, answered.queries[str(QUERY.query_id)].answer) == (
        "answered",
        "ICE was 8",
    )
    closed = fold([(DataQueryClosed(query_id=QUERY.query_id, resolution="Accepted"), day(6))], answered)
    assert (closed.queries[str(QUERY.query_id)].status, closed.queries[str(QUERY.query_id)].resolution) == (
        "closed",
        "Accepted",
    )
    assert [view(j, day(7), PROTOCOL).open_queries for j in (opened, answered, closed)] == [1, 1, 0]
    assert [q.status for q in view(closed, day(7), PROTOCOL).queries] == ["closed"]


def test_safety_reports_are_kept_by_kind():
    j = infused_journey(
        (CRS_SERIOUS, day(2)),
        (SafetyReportSubmitted(ae_id=CRS_SERIOUS.ae_id, report="sae_to_sponsor", received_at=at(day(2), 20)), day(2)),
        (SafetyReportSubmitted(ae_id=CRS_SERIOUS.ae_id, report="susar_to_regulator", received_at=at(day(9))), day(9)),
    )
    assert j.adverse_events[str(CRS_SERIOUS.ae_id)].reports_submitted == {
        "sae_to_sponsor": at(day(2), 20),
        "susar_to_regulator": at(day(9)),
    }


@pytest.mark.parametrize(
    ("onset", "emergent"),
    [(-10, False), (-6, False), (-5, True), (-4, True), (0, True), (30, True)],  # LD from day -5
)
def test_treatment_emergent_from_the_first_lymphodepletion_day(onset, emergent):
    nausea = ae(day(onset), term="Nausea", category="OTHER", grade=1)
    j = infused_journey((nausea, day(onset)))
    assert j.treatment_emergent(j.adverse_events[str(nausea.ae_id)]) is emergent
    [shown] = view(j, day(40), PROTOCOL).adverse_events
    assert shown.treatment_emergent is emergent


def test_without_lymphodepletion_treatment_starts_with_the_infusion():
    nausea = ae(day(-1), term="Nausea", category="OTHER", grade=1)
    j = fold([enrolled(), (nausea, day(-1)), (INFUSION, DAY0)])
    assert j.treatment_started_on == DAY0
    assert j.treatment_emergent(j.adverse_events[str(nausea.ae_id)]) is False
    assert fold([enrolled(), (nausea, day(-1))]).treatment_started_on is None  # not treated: nothing emerges


def test_an_updated_query_is_open_again_with_the_new_values():
    answered = infused_journey(
        (ICANS, day(3)), (QUERY, day(3)), (DataQueryAnswered(query_id=QUERY.query_id, answer="ICE was 8"), day(5))
    )
    restated = DataQueryUpdated(query_id=QUERY.query_id, recorded_value="2", expected_value="3", text="Check again")
    q = fold([(restated, day(6))], answered).queries[str(QUERY.query_id)]
    assert (q.status, q.answer, q.recorded_value, q.expected_value, q.text) == ("open", None, "2", "3", "Check again")
    assert q.opened_at == answered.queries[str(QUERY.query_id)].opened_at  # the same query


# --- infusion correction, persistence, subsequent therapy ---------------------------------------


def test_a_corrected_infusion_moves_day_0_and_keeps_the_previous_time():
    j = infused_journey(
        (InfusionCorrected(dose_cells_per_kg=3e7, dose_level=3, product_lot="L1", donor_id="D1"), day(2))
    )
    assert (j.infused_on, j.infusion_corrected_from, j.dose_cells_per_kg) == (day(2), [at(DAY0)], 3e7)
    v = view(j, day(30), PROTOCOL)
    assert (v.study_day, v.infused_on, v.infusion_corrected_from, v.status) == (28, day(2), [at(DAY0)], "infused")
    assert status(j, day(1), PROTOCOL) == "lymphodepleting"
    twice = fold([(InfusionCorrected(dose_cells_per_kg=3e7, dose_level=3, product_lot="L1", donor_id="D1"), day(1))], j)
    assert (twice.infused_on, twice.infusion_corrected_from) == (day(1), [at(DAY0), at(day(2))])


def test_a_persistence_sample_is_kept_and_completes_its_visit():
    j = infused_journey(
        (PersistenceSampled(visit_code="PERS_D7", flow_car_pct_of_cd3=3.5), day(7)),
        (PersistenceSampled(qpcr_copies_per_ug_dna=800.0), day(9)),
    )
    assert [(p.sampled_on, p.visit_code, p.qpcr_copies_per_ug_dna, p.flow_car_pct_of_cd3) for p in j.persistence] == [
        (day(7), "PERS_D7", None, 3.5),
        (day(9), None, 800.0, None),
    ]
    assert j.visits_completed == {"PERS_D7": day(7)}
    assert len(view(j, day(10), PROTOCOL).persistence) == 2


def test_subsequent_therapies_are_kept_in_date_order():
    j = infused_journey(
        (SubsequentTherapyStarted(therapy="allo_hsct"), day(120)),
        (SubsequentTherapyStarted(therapy="blinatumomab"), day(90)),
    )
    assert j.subsequent_therapy == [("blinatumomab", day(90)), ("allo_hsct", day(120))]


# --- dated records, survival contacts, last known alive -------------------------------------------


def alive(on: date, **changes) -> tuple[Payload, date]:
    return SurvivalStatusRecorded(**({"status": "alive", "method": "phone"} | changes)), on


def test_each_day_with_a_clinical_record_is_kept_but_not_records_about_the_data():
    j = infused_journey(
        (ICANS, day(3)),
        (QUERY, day(9)),
        (SafetyReportSubmitted(ae_id=ICANS.ae_id, report="sae_to_sponsor", received_at=at(day(11))), day(11)),
        alive(day(20)),
    )
    assert sorted(j.records_per_day) == [day(-10), day(-5), day(-4), day(-3), DAY0, day(3), day(20)]


def test_a_correction_moves_its_record_to_the_corrected_date():
    crs = ae(day(5))
    fix = AECorrected(ae_id=crs.ae_id, **ae(day(4)).model_dump(exclude={"ae_id"}))
    moved = InfusionCorrected(dose_cells_per_kg=2e7, dose_level=2, product_lot="L1", donor_id="D1")
    j = infused_journey((crs, day(5)), (fix, day(4)), (moved, day(1)))
    assert sorted(j.records_per_day)[-2:] == [day(1), day(4)]  # no record left on day 0 or day 5
    same_day = infused_journey((VisitCompleted(visit_code="D4"), day(5)), (crs, day(5)), (fix, day(4)))
    assert day(5) in same_day.records_per_day  # the visit is still dated then


def test_survival_contacts_are_kept_in_date_order():
    dead = SurvivalStatusRecorded(status="dead", method="medical_records", died_on=day(150), primary_cause="other")
    j = infused_journey(alive(day(140), visit_code="SURV_W20"), alive(day(112), method="visit"), (dead, day(160)))
    assert [(c.contacted_on, c.status, c.method, c.visit_code) for c in j.survival_contacts] == [
        (day(112), "alive", "visit", None),
        (day(140), "alive", "phone", "SURV_W20"),
        (day(160), "dead", "medical_records", None),
    ]
    assert (j.survival_contacts[-1].died_on, j.survival_contacts[-1].primary_cause) == (day(150), "other")
    assert day(160) not in j.records_per_day  # the news of a death is not contact with the subject
    assert [c.contacted_on for c in view(j, day(139), PROTOCOL).survival_contacts] == [day(112)]


def test_last_known_alive_is_the_latest_record_or_contact_by_the_date_never_the_date_itself():
    j = infused_journey(resp("W4", "CR", day(28)), alive(day(100)), (VisitCompleted(visit_code="D7"), day(7)))
    assert [j.last_known_alive(day(n)) for n in (-20, -1, 27, 28, 99, 100, 300)] == [
        None,
        day(-3),
        day(7),
        day(28),
        day(28),
        day(100),
        day(100),
    ]
    assert view(j, day(99), PROTOCOL).last_known_alive == day(28)


def test_a_declared_last_contact_counts_from_the_declaration():
    j = infused_journey(resp("W4", "CR", day(28)), (LostToFollowUp(last_contact_on=day(45)), day(60)))
    assert [j.last_known_alive(day(n)) for n in (50, 59, 60)] == [day(28), day(28), day(45)]


def test_last_known_alive_of_a_subject_who_died_is_the_day_of_death():
    j = infused_journey(
        (INFECTION, day(4)),
        resp("W4", "CR", day(28)),
        (SubjectDied(primary_cause="adverse_event"), day(40)),
        (AEUpdated(ae_id=INFECTION.ae_id, outcome="fatal", grade=5), day(41)),  # the death's own consequence
    )
    assert [j.last_known_alive(day(n)) for n in (39, 40, 50)] == [day(28), day(40), day(40)]


# --- status -------------------------------------------------------------------------------------


def test_status_before_infusion():
    assert status(Journey(subject_id=SUBJECT), DAY0, PROTOCOL) == "screening"
    assert status(fold([enrolled()]), DAY0, PROTOCOL) == "enrolled"
    assert status(fold([enrolled(), (FLU, day(-5))]), DAY0, PROTOCOL) == "lymphodepleting"
    failed = fold([(ScreenFailed(site_id="03", failure_reason="CD19 negative"), day(-10))])
    assert status(failed, DAY0, PROTOCOL) == "screen_failed"


@pytest.mark.parametrize(
    ("study_day", "expected"), [(0, "infused"), (28, "infused"), (29, "follow_up"), (84, "follow_up")]
)
def test_status_in_the_dlt_window_and_main_follow_up(study_day, expected):
    assert status(infused_journey(resp("W12", "CR", day(84))), day(study_day), PROTOCOL) == expected


@pytest.mark.parametrize(
    ("w12", "expected"),
    [("CR", "long_term_follow_up"), ("CRi", "long_term_follow_up"), ("NR", "follow_up"), ("RELAPSE", "follow_up")],
)
def test_status_after_week_12_depends_on_w12_remission(w12, expected):
    journey = infused_journey(resp("W12", w12, day(84)))
    assert status(journey, day(84), PROTOCOL) == "follow_up"
    assert status(journey, day(85), PROTOCOL) == expected
    assert status(journey, day(500), PROTOCOL) == expected  # until the StudyCompleted event


def test_missing_w12_keeps_the_subject_in_follow_up():
    journey = infused_journey(resp("W4", "CR", day(28)), resp("UNSCHEDULED", "CR", day(80)))
    assert status(journey, day(85), PROTOCOL) == "follow_up"
    assert status(journey, day(400), PROTOCOL) == "follow_up"


@pytest.mark.parametrize(
    ("w12", "ended", "completed"),
    [
        ("NR", "follow_up", StudyCompleted(completed="main_follow_up")),
        ("CR", "long_term_follow_up", StudyCompleted(completed="long_term_follow_up")),
    ],
)
def test_completed_only_from_the_study_completed_event(w12, ended, completed):
    finish = day(90) if completed.completed == "main_follow_up" else day(370)
    journey = infused_journey(resp("W12", w12, day(84)), (completed, finish))
    assert status(journey, finish - timedelta(days=1), PROTOCOL) == ended
    assert status(journey, finish, PROTOCOL) == "completed"
    assert (journey.completed_on, journey.off_study_on) == (finish, finish)


def test_lost_to_follow_up_from_the_declaration():
    journey = infused_journey(
        resp("W4", "CR", day(28)), (LostToFollowUp(last_contact_on=day(45), details="moved"), day(60))
    )
    assert status(journey, day(59), PROTOCOL) == "follow_up"
    assert status(journey, day(60), PROTOCOL) == "lost_to_follow_up"
    assert (journey.lost_to_follow_up_on, journey.last_contact_on, journey.off_study_on) == (day(60), day(45), day(60))
    assert view(journey, day(61), PROTOCOL).lost_to_follow_up_on == day(60)


def test_long_term_follow_up_start_is_recorded():
    journey = infused_journey(resp("W12", "CR", day(84)), (LongTermFollowUpStarted(week12_response="CR"), day(84)))
    assert view(journey, day(90), PROTOCOL).long_term_follow_up_on == day(84)


def test_withdrawal_and_death_override_the_treatment_state():
    withdrawn = infused_journey((ConsentWithdrawn(withdrawal_reason="moved"), day(40)))
    assert status(withdrawn, day(41), PROTOCOL) == "withdrawn"
    dead = fold([*BY_SOURCE["enrollment"], (SubjectDied(primary_cause="other"), day(210))])
    assert status(dead, day(211), PROTOCOL) == "died"


@pytest.mark.parametrize("left", [LostToFollowUp(last_contact_on=day(100)), StudyCompleted(completed="main_follow_up")])
def test_a_death_after_leaving_the_study_shows_as_died(left):
    journey = infused_journey((left, day(120)), (SubjectDied(primary_cause="unknown"), day(200)))
    assert status(journey, day(199), PROTOCOL) in ("lost_to_follow_up", "completed")
    assert status(journey, day(200), PROTOCOL) == "died"
    assert journey.off_study_on == day(120)


def test_status_on_a_date_counts_only_what_had_happened_by_then():
    dead = infused_journey(resp("W4", "CR", day(28)), (SubjectDied(primary_cause="other"), day(40)))
    assert status(dead, day(39), PROTOCOL) == "follow_up"
    assert status(dead, day(40), PROTOCOL) == "died"
    assert status(dead, day(-1), PROTOCOL) == "lymphodepleting"  # infused on day 0, not yet
    w12_late = infused_journey(resp("W12", "CR", day(90)))
    assert status(w12_late, day(89), PROTOCOL) == "follow_up"
    assert status(w12_late, day(90), PROTOCOL) == "long_term_follow_up"


# --- view ---------------------------------------------------------------------------------------


def test_view_best_and_latest_response():
    # delivered out of date order: latest means the last assessed, not the last received
    journey = infused_journey(resp("W12", "RELAPSE", day(84)), resp("W4", "CRi", day(28)), resp("W8", "CR", day(56)))
    v = view(journey, day(90), PROTOCOL)
    assert (v.best_response.timepoint, v.best_response.response) == ("W8", "CR")
    assert (v.latest_response.timepoint, v.latest_response.response) == ("W12", "RELAPSE")
    assert (v.status, v.study_day, v.as_of, v.infused_on) == ("follow_up", 90, day(90), DAY0)


def test_view_best_response_is_the_first_of_equal_rank():
    journey = infused_journey(resp("W8", "CR", day(56)), resp("W4", "CR", day(28)), resp("W12", "CRi", day(84)))
    v = view(journey, day(90), PROTOCOL)
    assert (v.best_response.timepoint, v.latest_response.timepoint) == ("W4", "W12")


def test_view_keeps_the_response_values():
    payload = ResponseAssessed(
        timepoint="W4",
        response="CRi",
        marrow_blasts_pct=2.0,
        anc_10e9_per_l=0.6,
        platelets_10e9_per_l=140,
        mrd_pct=0.002,
        mrd_assay="flow",
        mrd_negative=True,
    )
    latest = view(infused_journey((payload, day(28))), day(30), PROTOCOL).latest_response
    assert (latest.anc_10e9_per_l, latest.platelets_10e9_per_l, latest.mrd_pct, latest.mrd_negative) == (
        0.6,
        140,
        0.002,
        True,
    )


def test_view_lists_adverse_events_by_onset():
    late, early = ae(day(9), term="Late"), ae(day(1), term="Early")
    v = view(infused_journey((late, day(9)), (early, day(1))), day(10), PROTOCOL)
    assert [a.report.term for a in v.adverse_events] == ["Early", "Late"]


def test_view_before_any_response_or_infusion():
    v = view(fold([enrolled()]), DAY0, PROTOCOL)
    assert (v.status, v.study_day, v.best_response, v.latest_response) == ("enrolled", None, None, None)
    assert (v.ae_count, v.worst_crs_grade, v.open_queries, v.adverse_events) == (0, None, 0, [])


def test_best_response_ranks_progressive_disease_below_no_response():
    journey = infused_journey(resp("W8", "PD", day(56)), resp("W4", "NR", day(28)))
    v = view(journey, day(60), PROTOCOL)
    assert (v.best_response.response, v.latest_response.response) == ("NR", "PD")
    assert view(infused_journey(resp("W4", "PD", day(28))), day(30), PROTOCOL).best_response.response == "PD"


def test_long_term_assessments_are_responses_too():
    journey = infused_journey(
        resp("W12", "CR", day(84)),
        resp("M6", "CR", day(182)),
        resp("M9", "RELAPSE", day(273)),
        resp("M12", "PD", day(365)),
    )
    assert [r.timepoint for r in journey.responses] == ["W12", "M6", "M9", "M12"]
    assert status(journey, day(300), PROTOCOL) == "long_term_follow_up"
    v = view(journey, day(300), PROTOCOL)
    assert ([r.timepoint for r in v.responses], v.latest_response.timepoint) == (["W12", "M6", "M9"], "M9")


def test_the_view_as_of_a_date_shows_only_what_had_happened_by_then():
    crs = ae(day(2), grade=2)
    j = infused_journey(
        (crs, day(2)),
        (AEUpdated(ae_id=crs.ae_id, grade=4, outcome="not_recovered"), day(6)),
        (ae(day(12), term="Fever", category="OTHER", grade=1), day(12)),
        resp("W4", "CR", day(28)),
        (PersistenceSampled(qpcr_copies_per_ug_dna=10.0), day(30)),
        (SubsequentTherapyStarted(therapy="allo_hsct"), day(100)),
        (StudyCompleted(completed="main_follow_up"), day(110)),
        (SubjectDied(primary_cause="other"), day(150)),
    )
    early = view(j, day(5), PROTOCOL)
    [shown] = early.adverse_events
    assert (shown.grade, shown.worst_grade, shown.outcome, [g.grade for g in shown.grade_history]) == (2, 2, None, [2])
    assert (early.ae_count, early.worst_crs_grade, early.best_response, early.persistence) == (1, 2, None, [])
    assert (early.subsequent_therapy, early.completed_on, early.died_on, early.last_known_alive) == (
        [],
        None,
        None,
        day(2),
    )
    assert (early.status, early.study_day) == ("infused", 5)
    later = view(j, day(120), PROTOCOL)
    assert (later.ae_count, later.worst_crs_grade, later.adverse_events[0].outcome) == (2, 4, "not_recovered")
    assert (later.completed_on, later.died_on, later.status) == (day(110), None, "completed")
    before = view(j, day(-4), PROTOCOL)
    assert (before.infused_on, before.study_day, before.dose_cells_per_kg, before.lymphodepletion_days) == (
        None,
        None,
        None,
        [day(-5), day(-4)],
    )
