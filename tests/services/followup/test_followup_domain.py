"""Follow-up rules (pure, no I/O): adverse events and the data queries their findings raise, safety reports,
responses against the protocol's criteria, persistence, subsequent therapy, and leaving the study."""

import re
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from services.followup import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import (
    AECorrected,
    AEReported,
    AEReportedV1,
    AEUpdated,
    DataQueryAnswered,
    DataQueryClosed,
    DataQueryOpened,
    LongTermFollowUpStarted,
    LostToFollowUp,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    VisitCompleted,
)
from shared.contract.findings import CRSFindings, GvHDStaging, ICANSFindings
from shared.errors import InvalidCommand, NotFound, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta
from shared.facts import SubjectFacts
from shared.protocol import load_protocol

PROTOCOL = load_protocol()  # CR: blasts < 5%, ANC >= 1.0, platelets >= 100; MRD negative < 0.01%; W12 = day 84
SUBJECT = "UCT-02-003"
ENROLLED_ON = date(2025, 3, 3)
DAY0 = date(2025, 3, 12)
INVESTIGATOR = RecordedBy(user_id="inv-1", role="investigator")


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def at(on: date, hour: int = 9) -> datetime:
    return datetime(on.year, on.month, on.day, hour, tzinfo=UTC)


def meta(on: date, reason: str | None = None) -> EventMeta:
    return EventMeta(
        subject_id=SUBJECT,
        occurred_at=at(on),
        recorded_by=INVESTIGATOR,
        reason=reason,
        protocol_version=PROTOCOL.version,
    )


def facts(infused: bool = True, **changes) -> SubjectFacts:
    infused_at = at(DAY0, 10) if infused else None
    return SubjectFacts(**({"subject_id": SUBJECT, "enrolled_on": ENROLLED_ON, "infused_at": infused_at} | changes))


FACTS = facts()


def ae_fields(on: date, **changes) -> dict:
    """A grade 2 CRS without findings, onset at 09:00 on `on`, the site aware three hours later."""
    return {
        "term": "Cytokine release syndrome",
        "category": "CRS",
        "grade": 2,
        "serious": False,
        "relatedness": "probable",
        "aware_at": at(on, 12),
    } | changes


def ae(on: date, **changes) -> AEReported:
    return AEReported(**ae_fields(on, **changes))


def sae(on: date, **changes) -> AEReported:
    """Serious, suspected and unexpected: a SUSAR."""
    return ae(
        on, **{"grade": 3, "serious": True, "seriousness_criteria": ("hospitalisation",), "expected": False} | changes
    )


def report(subject, on: date, payload: AEReported, known: SubjectFacts | None = FACTS) -> domain.FollowupSubject:
    return domain.report_ae(subject, meta(on), payload, known, PROTOCOL)


def response(timepoint: str = "W4", result: str = "CR", **values) -> ResponseAssessed:
    blasts = 40.0 if result in ("NR", "RELAPSE") else 1.0
    return ResponseAssessed(**({"timepoint": timepoint, "response": result, "marrow_blasts_pct": blasts} | values))


def assess(subject, on: date, payload: ResponseAssessed, known: SubjectFacts | None = FACTS) -> domain.FollowupSubject:
    return domain.assess_response(subject, meta(on), payload, known, PROTOCOL)


def visit(subject, on: date, code: str, known: SubjectFacts | None = FACTS) -> domain.FollowupSubject:
    return domain.complete_visit(subject, meta(on), VisitCompleted(visit_code=code), known, PROTOCOL)


def died(on: date, subject=None) -> domain.FollowupSubject:
    return domain.record_death(subject, meta(on), SubjectDied(primary_cause="disease_progression"), facts())


def lost(subject, on: date, last_contact: date | None = None) -> domain.FollowupSubject:
    return domain.lose_to_follow_up(subject, meta(on), LostToFollowUp(last_contact_on=last_contact or on), facts())


def complete(
    subject, on: date, completed: str = "main_follow_up", protocol=PROTOCOL, reason: str | None = "W12 not at stake"
) -> domain.FollowupSubject:
    """(With a reason by default: these tests are about other rules than the week-12 assessment.)"""
    return domain.complete_study(subject, meta(on, reason), StudyCompleted(completed=completed), facts(), protocol)


def events(subject: domain.FollowupSubject) -> list:
    """The events raised since the last call, as (meta, payload)."""
    return [(e.meta, e.payload) for e in subject.collect_events()]


def in_ltfu() -> domain.FollowupSubject:
    """In remission at week 12 (day 84): long-term follow-up has started."""
    subject = assess(None, day(84), response("W12", "CR"))
    subject.collect_events()
    return subject


# The commands that need an infused subject, as name -> call(subject, on, facts).
NEEDS_INFUSION = {
    "ae": lambda s, on, f: report(s, on, ae(on), f),
    "response": lambda s, on, f: assess(s, on, response("UNSCHEDULED", "NR"), f),
    "visit": lambda s, on, f: visit(s, on, "D7", f),
    "persistence": lambda s, on, f: domain.record_persistence(
        s, meta(on), PersistenceSampled(flow_car_pct_of_cd3=2.0), f, PROTOCOL
    ),
    "therapy": lambda s, on, f: domain.start_subsequent_therapy(
        s, meta(on), SubsequentTherapyStarted(therapy="allo_hsct"), f
    ),
}


# --- who is followed up -------------------------------------------------------------------------


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_records_from_the_infusion_day_on(command):
    subject = NEEDS_INFUSION[command](None, day(0), facts())
    assert len(subject.collect_events()) == 1


@pytest.mark.parametrize("command", NEEDS_INFUSION)
@pytest.mark.parametrize("known", [None, SubjectFacts(subject_id=SUBJECT)])
def test_unknown_enrolment_is_retryable(command, known):
    with pytest.raises(SubjectNotFound, match=f"no enrolment for {SUBJECT}") as refused:
        NEEDS_INFUSION[command](None, day(1), known)
    assert refused.value.retryable is True


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_infusion_not_yet_known_is_retryable(command):
    with pytest.raises(RuleViolation, match="no infusion recorded yet") as refused:
        NEEDS_INFUSION[command](None, day(1), facts(infused=False))
    assert refused.value.retryable is True


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_date_before_the_infusion_is_refused(command):
    with pytest.raises(RuleViolation, match=f"{day(-1)} is before the infusion \\({DAY0}\\)") as refused:
        NEEDS_INFUSION[command](None, day(-1), facts())
    assert refused.value.retryable is False


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_date_after_death_is_refused_death_day_accepted(command):
    with pytest.raises(RuleViolation, match=f"{day(21)} is after {SUBJECT} died \\({day(20)}\\)"):
        NEEDS_INFUSION[command](died(day(20)), day(21), facts())
    on_death_day = NEEDS_INFUSION[command](died(day(20)), day(20), facts())
    assert len(on_death_day.collect_events()) == 2


@pytest.mark.parametrize("command", [*NEEDS_INFUSION, "death", "lost"])
def test_screen_failed_subject_is_not_followed_up_and_retrying_will_not_help(command):
    failed = SubjectFacts(subject_id=SUBJECT, site_id="02", screen_failed=True)
    with pytest.raises(RuleViolation, match=f"{SUBJECT} failed screening") as refused:
        if command == "death":
            domain.record_death(None, meta(day(1)), SubjectDied(primary_cause="unknown"), failed)
        elif command == "lost":
            domain.lose_to_follow_up(None, meta(day(1)), LostToFollowUp(last_contact_on=day(1)), failed)
        else:
            NEEDS_INFUSION[command](None, day(1), failed)
    assert refused.value.retryable is False


def test_after_withdrawal_no_study_procedures_but_safety_reporting_and_therapy_go_on():
    withdrawn = facts(withdrawn_on=day(10))
    for command in ("visit", "response", "persistence"):
        with pytest.raises(RuleViolation, match=f"after {SUBJECT} withdrew consent \\({day(10)}\\)"):
            NEEDS_INFUSION[command](None, day(11), withdrawn)
        assert NEEDS_INFUSION[command](None, day(10), withdrawn)  # on the day of withdrawal, still
    assert NEEDS_INFUSION["ae"](None, day(30), withdrawn).aes
    assert NEEDS_INFUSION["therapy"](None, day(30), withdrawn)


def test_events_of_a_subject_accumulate_in_one_stream():
    subject = report(None, day(1), ae(day(1)))
    subject = visit(subject, day(1), "D1")
    subject = died(day(5), subject)
    assert [type(p).__name__ for _, p in events(subject)] == ["AEReported", "VisitCompleted", "SubjectDied"]


# --- adverse events -----------------------------------------------------------------------------


def test_ae_ids_are_tracked_and_a_duplicate_is_refused():
    first = ae(day(2), grade=3)
    subject = report(None, day(2), first)
    subject = report(subject, day(3), ae(day(3), category="ICANS", term="ICANS"))
    assert first.ae_id in subject.aes and len(subject.aes) == 2
    assert (subject.aes[first.ae_id].grade, subject.aes[first.ae_id].onset_on) == (3, day(2))
    with pytest.raises(RuleViolation, match=f"{first.ae_id} is already recorded.*update or a correction"):
        report(subject, day(2), first)


def test_the_site_cannot_be_aware_of_an_ae_before_its_onset():
    with pytest.raises(InvalidCommand, match=r"aware_at .* is before the onset"):
        report(None, day(2), ae(day(2), aware_at=at(day(2), 8)))
    assert report(None, day(2), ae(day(2), aware_at=at(day(2), 9))).aes  # aware at the onset itself


CRS_G3 = CRSFindings(max_temperature_c=39.2, hypotension=True, vasopressors=1)  # ASTCT grade 3
FINDINGS = {  # category -> (findings, derived grade, scale named in the query)
    "CRS": ({"crs": CRS_G3}, 3, "ASTCT"),
    "ICANS": ({"icans": ICANSFindings(ice_score=5)}, 2, "ASTCT"),  # ICE 3-6
    "GVHD": ({"gvhd": GvHDStaging(skin_stage=3)}, 2, "MAGIC"),  # skin stage 3 alone: grade II
}


@pytest.mark.parametrize("category", FINDINGS)
def test_findings_that_give_another_grade_open_a_data_query_from_the_rules(category):
    findings, derived, scale = FINDINGS[category]
    reported = ae(day(2), category=category, term=category, grade=derived - 1, **findings)
    [(ae_meta, ae_payload), (query_meta, query)] = events(report(None, day(2), reported))
    assert ae_payload == reported and ae_meta.recorded_by == INVESTIGATOR
    assert isinstance(query, DataQueryOpened)
    assert (query.ae_id, query.field, query.recorded_value, query.expected_value) == (
        reported.ae_id,
        "grade",
        str(derived - 1),
        str(derived),
    )
    assert f"grade {derived} by {scale} ({PROTOCOL.version})" in query.text
    assert query_meta.recorded_by == RecordedBy(user_id="ucart-rules", role="system")
    assert query_meta.causation_id == ae_meta.event_id and query_meta.event_id != ae_meta.event_id
    assert (query_meta.correlation_id, query_meta.occurred_at) == (ae_meta.correlation_id, ae_meta.occurred_at)


@pytest.mark.parametrize("category", FINDINGS)
def test_findings_that_agree_with_the_investigator_open_no_query(category):
    findings, derived, _ = FINDINGS[category]
    subject = report(None, day(2), ae(day(2), category=category, term=category, grade=derived, **findings))
    assert [type(p) for _, p in events(subject)] == [AEReported]
    assert subject.open_queries == {}


def test_no_findings_no_query():
    assert [type(p) for _, p in events(report(None, day(2), ae(day(2), grade=4)))] == [AEReported]


def with_ae(reported: AEReported | None = None, **changes) -> tuple[domain.FollowupSubject, AEReported]:
    """A subject with one AE (onset day 2), its events collected."""
    reported = reported or ae(day(2), **changes)
    subject = report(None, day(2), reported)
    subject.collect_events()
    return subject, reported


def test_an_update_changes_the_current_grade():
    subject, reported = with_ae()
    subject = domain.update_ae(subject, meta(day(4)), AEUpdated(ae_id=reported.ae_id, grade=4))
    assert subject.aes[reported.ae_id].grade == 4
    subject = domain.update_ae(subject, meta(day(9)), AEUpdated(ae_id=reported.ae_id, outcome="recovered"))
    assert subject.aes[reported.ae_id].grade == 4
    assert len(events(subject)) == 2


def test_an_update_of_an_unknown_ae_is_not_found():
    for subject in (None, with_ae()[0]):
        with pytest.raises(NotFound, match=r"No adverse event .* is recorded"):
            domain.update_ae(subject, meta(day(4)), AEUpdated(ae_id=uuid4(), grade=3))


def test_an_update_before_the_onset_is_invalid():
    subject, reported = with_ae()
    with pytest.raises(InvalidCommand, match=f"dated {day(1)}, before the AE's onset \\({day(2)}\\)"):
        domain.update_ae(subject, meta(day(1)), AEUpdated(ae_id=reported.ae_id, grade=3))
    assert domain.update_ae(subject, meta(day(2)), AEUpdated(ae_id=reported.ae_id, grade=3))


def corrected(reported: AEReported, on: date, **changes) -> AECorrected:
    return AECorrected(ae_id=reported.ae_id, **ae_fields(on, **changes))


@pytest.mark.parametrize("reason", [None, "", "  "])
def test_a_correction_needs_a_reason(reason):
    subject, reported = with_ae()
    with pytest.raises(InvalidCommand, match="needs a reason"):
        domain.correct_ae(subject, meta(day(2), reason), corrected(reported, day(2), grade=3), FACTS, PROTOCOL)


def test_a_correction_of_an_unknown_ae_is_not_found():
    subject, _ = with_ae()
    stranger = ae(day(2))
    with pytest.raises(NotFound, match=f"No adverse event {stranger.ae_id}"):
        domain.correct_ae(subject, meta(day(2), "typo"), corrected(stranger, day(2)), FACTS, PROTOCOL)


def test_a_correction_replaces_the_report_with_its_onset_and_keeps_the_reason():
    subject, reported = with_ae(grade=3)
    subject = domain.update_ae(subject, meta(day(3)), AEUpdated(ae_id=reported.ae_id, grade=4))
    fix = corrected(reported, day(1), term="CRS", grade=2)  # the onset was a day earlier
    subject = domain.correct_ae(subject, meta(day(1), "Onset and grade mis-entered"), fix, FACTS, PROTOCOL)
    record = subject.aes[reported.ae_id]
    assert (record.fields, record.onset_on, record.grade) == (fix, day(1), 2)
    assert events(subject)[-1][0].reason == "Onset and grade mis-entered"
    with pytest.raises(InvalidCommand, match=r"aware_at .* is before the onset"):
        domain.correct_ae(subject, meta(day(3), "again"), corrected(reported, day(2)), FACTS, PROTOCOL)


def test_a_correction_whose_findings_disagree_opens_a_query_caused_by_it():
    subject, reported = with_ae(grade=3)
    fix = corrected(reported, day(2), grade=2, crs=CRS_G3)
    [(fix_meta, _), (query_meta, query)] = events(
        domain.correct_ae(subject, meta(day(2), "findings added"), fix, FACTS, PROTOCOL)
    )
    assert isinstance(query, DataQueryOpened) and (query.recorded_value, query.expected_value) == ("2", "3")
    assert (query_meta.causation_id, query_meta.recorded_by.user_id, query_meta.reason) == (
        fix_meta.event_id,
        "ucart-rules",
        None,
    )


# --- data queries -------------------------------------------------------------------------------


def with_query() -> tuple[domain.FollowupSubject, DataQueryOpened]:
    subject = report(None, day(2), ae(day(2), grade=2, crs=CRS_G3))
    query = events(subject)[-1][1]
    return subject, query


def test_a_query_is_answered_then_closed():
    subject, query = with_query()
    assert subject.open_queries == {query.query_id: False}
    subject = domain.answer_query(
        subject, meta(day(3)), DataQueryAnswered(query_id=query.query_id, answer="Grade 2 is right")
    )
    assert subject.open_queries == {query.query_id: True}
    subject = domain.close_query(
        subject, meta(day(4)), DataQueryClosed(query_id=query.query_id, resolution="Explanation accepted")
    )
    assert subject.open_queries == {}
    assert [type(p) for _, p in events(subject)] == [DataQueryAnswered, DataQueryClosed]


def test_a_query_is_answered_before_it_is_closed():
    subject, query = with_query()
    with pytest.raises(RuleViolation, match="has not been answered yet"):
        domain.close_query(subject, meta(day(3)), DataQueryClosed(query_id=query.query_id, resolution="done"))


def test_a_closed_or_unknown_query_cannot_be_changed():
    subject, query = with_query()
    subject = domain.answer_query(subject, meta(day(3)), DataQueryAnswered(query_id=query.query_id, answer="ok"))
    subject = domain.close_query(subject, meta(day(4)), DataQueryClosed(query_id=query.query_id, resolution="ok"))
    for query_id in (query.query_id, uuid4()):
        with pytest.raises(NotFound, match=r"No open data query .*a closed query cannot be changed"):
            domain.answer_query(subject, meta(day(5)), DataQueryAnswered(query_id=query_id, answer="again"))
        with pytest.raises(NotFound, match="No open data query"):
            domain.close_query(subject, meta(day(5)), DataQueryClosed(query_id=query_id, resolution="again"))
    with pytest.raises(NotFound):
        domain.answer_query(None, meta(day(5)), DataQueryAnswered(query_id=query.query_id, answer="again"))


# --- expedited safety reports -------------------------------------------------------------------


def submit(subject, ae_id, kind: str, received_at: datetime) -> domain.FollowupSubject:
    return domain.submit_safety_report(
        subject, meta(day(3)), SafetyReportSubmitted(ae_id=ae_id, report=kind, received_at=received_at)
    )


def test_a_susar_is_reported_to_the_sponsor_and_the_regulator_once_each():
    subject, reported = with_ae(sae(day(2)))
    subject = submit(subject, reported.ae_id, "sae_to_sponsor", at(day(3)))
    subject = submit(subject, reported.ae_id, "susar_to_regulator", at(day(8)))
    assert subject.aes[reported.ae_id].reports == {"sae_to_sponsor", "susar_to_regulator"}
    for kind, name in (("sae_to_sponsor", "sae to sponsor"), ("susar_to_regulator", "susar to regulator")):
        with pytest.raises(RuleViolation, match=f"The {name} report of {reported.ae_id} is already recorded"):
            submit(subject, reported.ae_id, kind, at(day(9)))


def test_only_a_serious_ae_is_reported():
    subject, reported = with_ae(grade=4)  # severe, not serious
    for kind in ("sae_to_sponsor", "susar_to_regulator"):
        with pytest.raises(RuleViolation, match="is not serious: no expedited report is due"):
            submit(subject, reported.ae_id, kind, at(day(3)))


@pytest.mark.parametrize("changes", [{"expected": True}, {"expected": None}, {"relatedness": "unlikely"}])
def test_a_susar_report_needs_serious_suspected_and_unexpected(changes):
    subject, reported = with_ae(sae(day(2), **changes))
    with pytest.raises(RuleViolation, match="is not a SUSAR"):
        submit(subject, reported.ae_id, "susar_to_regulator", at(day(3)))
    assert submit(subject, reported.ae_id, "sae_to_sponsor", at(day(3)))


def test_expectedness_corrected_to_unexpected_makes_a_susar_reportable():
    subject, reported = with_ae(sae(day(2), expected=None))
    fix = AECorrected(ae_id=reported.ae_id, **sae(day(2), expected=False).model_dump(exclude={"ae_id"}))
    subject = domain.correct_ae(subject, meta(day(2), "Not in the investigator's brochure"), fix, FACTS, PROTOCOL)
    assert submit(subject, reported.ae_id, "susar_to_regulator", at(day(3)))


def test_a_report_cannot_be_received_before_the_site_was_aware():
    subject, reported = with_ae(sae(day(2)))  # aware at 12:00 on day 2
    with pytest.raises(InvalidCommand, match="received_at is before the site became aware"):
        submit(subject, reported.ae_id, "sae_to_sponsor", at(day(2), 11))
    assert submit(subject, reported.ae_id, "sae_to_sponsor", at(day(2), 12))


def test_a_report_of_an_unknown_ae_is_not_found():
    with pytest.raises(NotFound, match="No adverse event"):
        submit(None, uuid4(), "sae_to_sponsor", at(day(3)))


def test_a_v1_ae_in_the_stream_is_read_as_v2():
    v1 = AEReportedV1(term="Sepsis", category="INFECTION", grade=3, serious=True, relatedness="unlikely")
    subject = domain.FollowupSubject.record_into(None, meta(day(2)), v1)  # as replayed from an old stream
    record = subject.aes[v1.ae_id]
    assert (record.fields.aware_at, record.fields.seriousness_criteria) == (at(day(2)), ("not_specified",))
    with pytest.raises(InvalidCommand, match="received_at is before the site became aware"):
        submit(subject, v1.ae_id, "sae_to_sponsor", at(day(2), 8))
    assert submit(subject, v1.ae_id, "sae_to_sponsor", at(day(2), 9))


# --- response assessments -----------------------------------------------------------------------

GOOD_COUNTS = {
    "anc_10e9_per_l": 1.0,
    "platelets_10e9_per_l": 100.0,
    "circulating_blasts": False,
    "extramedullary_disease": False,
}


def refused_as(payload: ResponseAssessed, subject=None) -> str:
    with pytest.raises(InvalidCommand) as refused:
        assess(subject, day(28), payload)
    return refused.value.detail


def test_a_scheduled_timepoint_is_assessed_once_unscheduled_any_number():
    subject = assess(None, day(28), response("W4"))
    with pytest.raises(RuleViolation, match=r"W4 response .* already recorded.*UNSCHEDULED"):
        assess(subject, day(30), response("W4", "CRi"))
    subject = assess(subject, day(40), response("UNSCHEDULED"))
    subject = assess(subject, day(45), response("UNSCHEDULED"))
    subject = assess(subject, day(56), response("W8"))
    assert subject.assessed_timepoints == {"W4", "W8", "UNSCHEDULED"}
    assert len(subject.collect_events()) == 4


@pytest.mark.parametrize("result", ["CR", "CRi"])
def test_remission_needs_blasts_below_the_threshold(result):
    counts = GOOD_COUNTS | {"anc_10e9_per_l": 0.5} if result == "CRi" else GOOD_COUNTS
    assert assess(None, day(28), response("W4", result, marrow_blasts_pct=4.99, **counts)).in_remission
    assert "marrow blasts must be < 5.0% (got 5.0%)" in refused_as(
        response("W4", result, marrow_blasts_pct=5.0, **counts)
    )


@pytest.mark.parametrize(
    ("finding", "problem"),
    [("circulating_blasts", "no circulating blasts"), ("extramedullary_disease", "no extramedullary disease")],
)
@pytest.mark.parametrize("result", ["CR", "CRi"])
def test_remission_needs_no_circulating_blasts_and_no_extramedullary_disease(finding, problem, result):
    assert f"there must be {problem}" in refused_as(response("W4", result, **{finding: True}))


@pytest.mark.parametrize(
    ("low", "named"),
    [
        ({"anc_10e9_per_l": 0.99}, "ANC"),
        ({"platelets_10e9_per_l": 99.9}, "platelets"),
        ({"anc_10e9_per_l": 0.2, "platelets_10e9_per_l": 20}, "ANC and platelets"),
    ],
)
def test_a_cr_with_a_low_count_is_a_cri(low, named):
    detail = refused_as(response("W4", "CR", **GOOD_COUNTS | low))
    assert re.search(f"^CR at W4: {named} below the CR thresholds .*: this is a CRi.$", detail), detail
    assert assess(None, day(28), response("W4", "CRi", **GOOD_COUNTS | low)).in_remission


def test_a_cr_at_the_count_thresholds_is_a_cr_not_a_cri():
    assert assess(None, day(28), response("W4", "CR", **GOOD_COUNTS)).in_remission
    assert "ANC and platelets both meet the CR thresholds: this is a CR" in refused_as(
        response("W4", "CRi", **GOOD_COUNTS)
    )


def test_counts_not_given_are_not_judged():
    assert assess(None, day(28), response("W4", "CR")).in_remission
    assert assess(None, day(28), response("W4", "CRi", anc_10e9_per_l=1.5)).in_remission  # platelets unknown


def test_all_problems_are_named_at_once():
    detail = refused_as(response("W4", "CR", marrow_blasts_pct=8, circulating_blasts=True, anc_10e9_per_l=0.1))
    assert detail.count(";") == 2 and detail.startswith("CR at W4: marrow blasts")


def in_remission() -> domain.FollowupSubject:
    subject = assess(None, day(28), response("W4", "CR"))
    subject.collect_events()
    return subject


def test_a_relapse_follows_a_remission():
    with pytest.raises(RuleViolation, match=r"A relapse follows a CR or CRi.*record NR"):
        assess(None, day(28), response("W4", "RELAPSE"))
    not_responding = assess(None, day(28), response("W4", "NR"))
    with pytest.raises(RuleViolation, match="not in remission on record"):
        assess(not_responding, day(56), response("W8", "RELAPSE"))
    relapsed = assess(in_remission(), day(56), response("W8", "RELAPSE", cd19_status="CD19-"))
    assert relapsed.in_remission is False
    with pytest.raises(RuleViolation, match="not in remission on record"):
        assess(relapsed, day(60), response("UNSCHEDULED", "RELAPSE"))


@pytest.mark.parametrize(
    ("values", "accepted"),
    [
        ({"marrow_blasts_pct": 5.0}, True),
        ({"marrow_blasts_pct": 4.9}, False),
        ({"marrow_blasts_pct": 0.0, "extramedullary_disease": True}, True),
        ({"marrow_blasts_pct": 4.9, "extramedullary_disease": False}, False),
    ],
)
def test_a_relapse_needs_blasts_at_the_threshold_or_extramedullary_disease(values, accepted):
    payload = response("W8", "RELAPSE", **values)
    if accepted:
        assert assess(in_remission(), day(56), payload).in_remission is False
    else:
        with pytest.raises(InvalidCommand, match=r"a relapse needs marrow blasts >= 5\.0% or extramedullary disease"):
            assess(in_remission(), day(56), payload)


@pytest.mark.parametrize(
    ("mrd_pct", "negative", "consistent"),
    [
        (0.009, True, True),
        (0.01, True, False),
        (0.01, False, True),
        (0.009, False, False),
        (0.5, None, True),
    ],
)
def test_mrd_negative_must_agree_with_the_mrd_value(mrd_pct, negative, consistent):
    payload = response("W4", "CR", mrd_pct=mrd_pct, mrd_assay="flow", mrd_negative=negative)
    if consistent:
        assert assess(None, day(28), payload)
    else:
        assert f"mrd_negative contradicts mrd_pct {mrd_pct}% (negative below 0.01%)" in refused_as(payload)


def test_no_response_is_not_judged_against_the_remission_criteria():
    assert assess(None, day(28), response("W4", "NR", marrow_blasts_pct=3, circulating_blasts=True, anc_10e9_per_l=0.1))


@pytest.mark.parametrize("result", ["CR", "CRi"])
def test_remission_at_week_12_starts_long_term_follow_up(result):
    subject = assess(None, day(84), response("W12", result, anc_10e9_per_l=0.5 if result == "CRi" else None))
    [(w12_meta, _), (start_meta, start)] = events(subject)
    assert start == LongTermFollowUpStarted(week12_response=result)
    assert start_meta.recorded_by == RecordedBy(user_id="ucart-rules", role="system")
    assert start_meta.causation_id == w12_meta.event_id and start_meta.occurred_at == w12_meta.occurred_at
    assert subject.long_term_follow_up is True
    with pytest.raises(RuleViolation, match=r"W12 response .* already recorded"):
        assess(subject, day(85), response("W12", result))
    subject = assess(subject, day(90), response("UNSCHEDULED", "CR"))
    assert [type(p) for _, p in events(subject)] == [ResponseAssessed]  # started once


@pytest.mark.parametrize(("timepoint", "result"), [("W12", "NR"), ("W8", "CR"), ("UNSCHEDULED", "CR")])
def test_long_term_follow_up_starts_only_with_a_week_12_remission(timepoint, result):
    subject = assess(None, day(84), response(timepoint, result))
    assert [type(p) for _, p in events(subject)] == [ResponseAssessed]
    assert subject.long_term_follow_up is False


def test_a_week_12_relapse_does_not_start_long_term_follow_up():
    subject = assess(in_remission(), day(84), response("W12", "RELAPSE"))
    assert [type(p) for _, p in events(subject)] == [ResponseAssessed] and not subject.long_term_follow_up


# --- visits and persistence ---------------------------------------------------------------------


def test_unknown_visit_code_is_invalid_and_names_the_valid_ones():
    refusal = f"Visit code D99 is not in protocol {re.escape(PROTOCOL.version)}; valid codes: D1, D4"
    with pytest.raises(InvalidCommand, match=refusal):
        visit(None, day(7), "D99")


def test_a_visit_is_completed_once():
    subject = visit(None, day(7), "D7")
    assert subject.visits_completed == {"D7": day(7)}
    with pytest.raises(RuleViolation, match=f"Visit D7 .* already completed on {day(7)}"):
        visit(subject, day(8), "D7")


def persistence(subject, on: date, code: str | None) -> domain.FollowupSubject:
    sample = PersistenceSampled(visit_code=code, qpcr_copies_per_ug_dna=25000.0)
    return domain.record_persistence(subject, meta(on), sample, facts(), PROTOCOL)


def test_a_persistence_sample_completes_its_visit_once():
    subject = persistence(None, day(7), "PERS_D7")
    assert subject.visits_completed == {"PERS_D7": day(7)}
    with pytest.raises(RuleViolation, match=r"Visit PERS_D7 .* already completed"):
        persistence(subject, day(8), "PERS_D7")
    subject = persistence(subject, day(8), None)  # an extra sample outside the schedule
    assert subject.visits_completed == {"PERS_D7": day(7)} and len(events(subject)) == 2


def test_a_persistence_visit_code_must_be_in_the_protocol():
    with pytest.raises(InvalidCommand, match="Visit code PERS_D99 is not in protocol"):
        persistence(None, day(7), "PERS_D99")


def test_subsequent_therapy_is_recorded():
    therapy = SubsequentTherapyStarted(therapy="allo_hsct", details="MUD")
    [(_, payload)] = events(domain.start_subsequent_therapy(None, meta(day(70)), therapy, facts()))
    assert payload == therapy


# --- lost to follow-up and study completion -----------------------------------------------------


def test_lost_to_follow_up_with_a_last_contact_not_after_the_declaration():
    with pytest.raises(
        InvalidCommand,
        match=f"last_contact_on \\({day(41)}\\) is after the date the subject is declared lost \\({day(40)}\\)",
    ):
        lost(None, day(40), last_contact=day(41))
    subject = lost(None, day(40), last_contact=day(30))
    assert subject.lost_on == day(40)
    assert lost(None, day(40), last_contact=day(40)).lost_on == day(40)


def test_lost_to_follow_up_once_and_not_after_death():
    with pytest.raises(RuleViolation, match=f"{SUBJECT} was lost to follow-up on {day(40)}: no longer on study"):
        lost(lost(None, day(40)), day(50))
    with pytest.raises(RuleViolation, match=f"{SUBJECT} died on {day(20)}"):
        lost(died(day(20)), day(50))


def test_a_loss_to_follow_up_is_not_dated_nor_last_in_contact_before_what_is_recorded():
    sampled = visit(None, day(60), "RESP_W8")  # the site saw the subject on day 60
    with pytest.raises(
        InvalidCommand, match=f"dated {day(50)}, before data already recorded for {SUBJECT} \\(on {day(60)}\\)"
    ):
        lost(sampled, day(50), last_contact=day(50))
    with pytest.raises(InvalidCommand, match=f"last_contact_on \\({day(55)}\\) is before data already recorded"):
        lost(sampled, day(70), last_contact=day(55))
    with pytest.raises(InvalidCommand, match="before data already recorded"):  # before enrolment: 2000-01-01
        domain.lose_to_follow_up(
            None, meta(date(2000, 1, 1)), LostToFollowUp(last_contact_on=date(2000, 1, 1)), facts()
        )
    assert lost(sampled, day(70), last_contact=day(60)).lost_on == day(70)


def test_a_withdrawn_subject_is_not_lost_to_follow_up():
    withdrawn = facts(withdrawn_on=day(30))
    with pytest.raises(RuleViolation, match=f"withdrew consent on {day(30)}"):
        domain.lose_to_follow_up(None, meta(day(40)), LostToFollowUp(last_contact_on=day(35)), withdrawn)


def test_lost_before_the_infusion_is_allowed():
    subject = domain.lose_to_follow_up(
        None, meta(day(-5)), LostToFollowUp(last_contact_on=day(-6)), facts(infused=False)
    )
    assert subject.lost_on == day(-5)


@pytest.mark.parametrize("leave", ["lost", "completed"])
def test_after_leaving_the_study_no_visits_or_responses(leave):
    subject = lost(None, day(90)) if leave == "lost" else complete(None, day(90))
    what = "was lost to follow-up" if leave == "lost" else "completed the study"
    for command in ("visit", "response", "persistence"):
        with pytest.raises(RuleViolation, match=f"{day(91)} is after {SUBJECT} {what} \\({day(90)}\\)"):
            NEEDS_INFUSION[command](subject, day(91), facts())
    assert visit(subject, day(90), "RESP_W12")  # on the day itself
    assert report(subject, day(95), ae(day(95))).aes  # safety reporting goes on


@pytest.mark.parametrize(("study_day", "allowed"), [(83, False), (84, True)])
def test_main_follow_up_completes_from_week_12(study_day, allowed):
    if allowed:
        assert complete(None, day(study_day)).completed_on == day(study_day)
    else:
        with pytest.raises(RuleViolation, match="main follow-up runs to day 84 \\(week 12\\); this is day 83"):
            complete(None, day(study_day))


def test_completion_day_comes_from_the_protocol():
    later = PROTOCOL.model_copy(update={"followup": PROTOCOL.followup.model_copy(update={"main_followup_end_day": 90})})
    with pytest.raises(RuleViolation, match="runs to day 90"):
        complete(None, day(84), protocol=later)
    assert complete(None, day(90), protocol=later)


@pytest.mark.parametrize(("study_day", "allowed"), [(364, False), (365, True)])
def test_long_term_follow_up_completes_from_month_12(study_day, allowed):
    if allowed:
        assert complete(in_ltfu(), day(study_day), "long_term_follow_up").completed_on == day(study_day)
    else:
        with pytest.raises(RuleViolation, match="Long-term follow-up runs to day 365; this is day 364"):
            complete(in_ltfu(), day(study_day), "long_term_follow_up")


def test_the_completion_must_match_the_follow_up_the_subject_is_in():
    with pytest.raises(RuleViolation, match="is in long-term follow-up, which ends at day 365"):
        complete(in_ltfu(), day(100), "main_follow_up")
    not_in_remission = assess(None, day(84), response("W12", "NR"))
    with pytest.raises(RuleViolation, match=r"is not in long-term follow-up .*main follow-up instead"):
        complete(not_in_remission, day(365), "long_term_follow_up")


def test_the_study_is_completed_once_and_not_after_death_or_loss():
    with pytest.raises(RuleViolation, match=f"completed the study on {day(84)}: no longer on study"):
        complete(complete(None, day(84)), day(84))
    with pytest.raises(RuleViolation, match=f"{day(90)} is after {SUBJECT} completed the study \\({day(84)}\\)"):
        complete(complete(None, day(84)), day(90))
    with pytest.raises(RuleViolation, match=f"was lost to follow-up on {day(84)}: no longer on study"):
        complete(lost(None, day(84)), day(84))
    with pytest.raises(RuleViolation, match=f"died on {day(84)}"):
        complete(died(day(84)), day(84))


def test_main_follow_up_completion_needs_the_week_12_assessment_or_a_reason():
    with pytest.raises(RuleViolation, match="no week-12 response assessment: record it first, or complete"):
        complete(None, day(90), reason=None)
    with pytest.raises(RuleViolation, match="no week-12 response assessment"):
        complete(assess(None, day(56), response("W8", "NR")), day(90), reason=" ")
    assert complete(assess(None, day(84), response("W12", "NR")), day(90), reason=None).completed_on == day(90)
    assert complete(None, day(90), reason="Subject refused the marrow aspirate").completed_on == day(90)


def test_a_completion_is_not_dated_before_data_already_recorded():
    seen = visit(assess(None, day(84), response("W12", "NR")), day(95), "LTFU_M6")
    with pytest.raises(InvalidCommand, match=f"dated {day(90)}, before data already recorded .* \\(on {day(95)}\\)"):
        complete(seen, day(90), reason=None)
    assert complete(seen, day(95), reason=None).completed_on == day(95)


def test_completion_needs_an_infusion():
    with pytest.raises(RuleViolation, match="no infusion recorded yet"):
        domain.complete_study(
            None, meta(day(90)), StudyCompleted(completed="main_follow_up"), facts(infused=False), PROTOCOL
        )


# --- death --------------------------------------------------------------------------------------


def test_death_may_be_recorded_before_infusion():
    subject = domain.record_death(
        None, meta(ENROLLED_ON + timedelta(days=2)), SubjectDied(primary_cause="adverse_event"), facts(infused=False)
    )
    assert subject.died_on == ENROLLED_ON + timedelta(days=2)


@pytest.mark.parametrize("known", [None, SubjectFacts(subject_id=SUBJECT)])
def test_death_of_unknown_subject_is_retryable(known):
    with pytest.raises(SubjectNotFound, match=f"no enrolment for {SUBJECT}") as refused:
        domain.record_death(None, meta(day(3)), SubjectDied(primary_cause="unknown"), known)
    assert refused.value.retryable is True


def test_death_before_enrolment_is_invalid():
    with pytest.raises(InvalidCommand, match="before enrolment"):
        domain.record_death(None, meta(ENROLLED_ON - timedelta(days=1)), SubjectDied(primary_cause="other"), facts())


def test_death_is_recorded_once():
    with pytest.raises(RuleViolation, match=f"death of {SUBJECT} is already recorded \\({day(20)}\\)"):
        died(day(25), died(day(20)))


def test_death_dated_before_data_already_recorded_is_invalid():
    subject = report(None, day(20), ae(day(20)))
    with pytest.raises(InvalidCommand, match=f"before follow-up data already recorded .*\\(on {day(20)}\\)"):
        died(day(19), subject)
    assert died(day(20), subject).died_on == day(20)


@pytest.mark.parametrize("leave", ["lost", "completed"])
def test_death_after_leaving_the_study_is_recorded(leave):
    subject = lost(None, day(90), last_contact=day(80)) if leave == "lost" else complete(None, day(90))
    assert died(day(120), subject).died_on == day(120)


def test_answering_a_query_is_not_contact_with_the_subject():
    # A query answered on day 40 must not make a death on day 30 look earlier than the data.
    subject = report(None, day(20), ae(day(20)))
    query = DataQueryOpened(
        ae_id=next(iter(subject.aes)), field="grade", recorded_value="2", expected_value="3", text="check"
    )
    subject = domain.FollowupSubject.record_into(subject, meta(day(21)), query)
    subject = domain.answer_query(subject, meta(day(40)), DataQueryAnswered(query_id=query.query_id, answer="ok"))
    assert died(day(30), subject).died_on == day(30)


def test_not_specified_seriousness_is_only_for_upcast_v1_events():
    with pytest.raises(InvalidCommand, match="not_specified"):
        report(None, day(1), sae(day(1), seriousness_criteria=("not_specified",)))


def test_a_corrected_onset_is_checked_against_the_infusion():
    reported = ae(day(2))
    subject = report(None, day(2), reported)
    with pytest.raises(RuleViolation, match="before the infusion"):
        domain.correct_ae(
            subject,
            meta(day(-1), "onset was earlier"),
            AECorrected(ae_id=reported.ae_id, **ae_fields(day(-1))),
            FACTS,
            PROTOCOL,
        )


def test_a_week12_remission_without_the_ltfu_event_still_counts_as_long_term_follow_up():
    # A week-12 CR stored as schema v1 (before LongTermFollowUpStarted existed) has no such event.
    subject = domain.FollowupSubject.record_into(None, meta(day(84)), response("W12", "CR"))
    with pytest.raises(RuleViolation, match="in long-term follow-up"):
        complete(subject, day(90))
    assert complete(subject, day(365), "long_term_follow_up").completed_on == day(365)
