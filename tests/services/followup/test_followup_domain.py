"""Follow-up rules (pure, no I/O): adverse events and the data queries their findings raise, safety reports,
responses against the protocol's criteria and the disease course, persistence, subsequent therapy, survival
contacts, and leaving the study."""

import re
from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

import pytest

from services.followup import domain
from shared.contract.envelope import RecordedBy
from shared.contract.events import (
    AECorrected,
    AEReported,
    AEUpdated,
    DataQueryAnswered,
    DataQueryClosed,
    DataQueryOpened,
    DataQueryUpdated,
    LongTermFollowUpStarted,
    LostToFollowUp,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    SurvivalStatusRecorded,
    VisitCompleted,
)
from shared.contract.findings import CRSFindings, GvHDStaging, ICANSFindings
from shared.contract.previous import AEReportedV1
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


def alive(subject, on: date, known: SubjectFacts | None = FACTS, code: str | None = None) -> domain.FollowupSubject:
    contact = SurvivalStatusRecorded(status="alive", method="phone", visit_code=code)
    return domain.record_survival_status(subject, meta(on), contact, known, PROTOCOL)


# The commands that need an infused subject, as name -> call(subject, on, facts).
NEEDS_INFUSION = {
    "alive contact": alive,
    "response": lambda s, on, f: assess(s, on, response("UNSCHEDULED", "NR"), f),
    "visit": lambda s, on, f: visit(s, on, "D7", f),
    "persistence": lambda s, on, f: domain.record_persistence(
        s, meta(on), PersistenceSampled(flow_car_pct_of_cd3=2.0), f, PROTOCOL
    ),
    "therapy": lambda s, on, f: domain.start_subsequent_therapy(
        s, meta(on), SubsequentTherapyStarted(therapy="allo_hsct"), f
    ),
}
# Clinical records: none dated after a death. AEs are recorded from enrolment on, without an infusion.
CLINICAL = NEEDS_INFUSION | {"ae": lambda s, on, f: report(s, on, ae(on), f)}


# --- who is followed up -------------------------------------------------------------------------


@pytest.mark.parametrize("command", NEEDS_INFUSION)
def test_records_from_the_infusion_day_on(command):
    subject = NEEDS_INFUSION[command](None, day(0), facts())
    assert len(subject.collect_events()) == 1


@pytest.mark.parametrize("command", CLINICAL)
@pytest.mark.parametrize("known", [None, SubjectFacts(subject_id=SUBJECT)])
def test_unknown_enrolment_is_retryable(command, known):
    with pytest.raises(SubjectNotFound, match=f"no enrolment for {SUBJECT}") as refused:
        CLINICAL[command](None, day(1), known)
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


@pytest.mark.parametrize("command", CLINICAL)
def test_nothing_clinical_is_dated_after_a_death_the_death_day_is(command):
    with pytest.raises(RuleViolation, match=f"{day(21)} is after {SUBJECT} died \\({day(20)}\\)"):
        CLINICAL[command](died(day(20)), day(21), facts())
    on_death_day = CLINICAL[command](died(day(20)), day(20), facts())
    assert len(on_death_day.collect_events()) == 2


@pytest.mark.parametrize("command", [*CLINICAL, "death", "lost"])
def test_screen_failed_subject_is_not_followed_up_and_retrying_will_not_help(command):
    failed = SubjectFacts(subject_id=SUBJECT, site_id="02", screen_failed=True)
    with pytest.raises(RuleViolation, match=f"{SUBJECT} failed screening") as refused:
        if command == "death":
            domain.record_death(None, meta(day(1)), SubjectDied(primary_cause="unknown"), failed)
        elif command == "lost":
            domain.lose_to_follow_up(None, meta(day(1)), LostToFollowUp(last_contact_on=day(1)), failed)
        else:
            CLINICAL[command](None, day(1), failed)
    assert refused.value.retryable is False


def test_after_withdrawal_no_study_procedures_but_safety_reporting_and_therapy_go_on():
    withdrawn = facts(withdrawn_on=day(10))
    for command in ("visit", "response", "persistence", "alive contact"):
        with pytest.raises(RuleViolation, match=f"after {SUBJECT} withdrew consent \\({day(10)}\\)"):
            NEEDS_INFUSION[command](None, day(11), withdrawn)
        assert NEEDS_INFUSION[command](None, day(10), withdrawn)  # on the day of withdrawal, still
    assert CLINICAL["ae"](None, day(30), withdrawn).aes
    assert NEEDS_INFUSION["therapy"](None, day(30), withdrawn)


def test_events_of_a_subject_accumulate_in_one_stream():
    subject = report(None, day(1), ae(day(1)))
    subject = visit(subject, day(1), "D1")
    subject = died(day(5), subject)
    assert [type(p).__name__ for _, p in events(subject)] == ["AEReported", "VisitCompleted", "SubjectDied"]


# --- adverse events -----------------------------------------------------------------------------


@pytest.mark.parametrize("onset", [ENROLLED_ON, day(-2), day(-1)])
def test_aes_are_recorded_from_enrolment_on_without_an_infusion(onset):
    for known in (facts(infused=False), facts()):  # during lymphodepletion, before or after the infusion is known
        [(_, reported)] = events(report(None, onset, ae(onset), known))
        assert isinstance(reported, AEReported)


def test_an_ae_before_enrolment_is_invalid_and_names_both_dates():
    before = ENROLLED_ON - timedelta(days=1)
    with pytest.raises(InvalidCommand, match=f"onset {before} is before {SUBJECT} was enrolled \\({ENROLLED_ON}\\)"):
        report(None, before, ae(before), facts(infused=False))


def test_a_corrected_onset_is_in_the_ae_period_too():
    subject, reported = with_ae()
    fix = corrected(reported, day(-2))  # lymphodepletion: accepted
    assert domain.correct_ae(subject, meta(day(-2), "onset was earlier"), fix, FACTS, PROTOCOL).aes
    before = ENROLLED_ON - timedelta(days=1)
    with pytest.raises(InvalidCommand, match=f"onset {before} is before {SUBJECT} was enrolled"):
        domain.correct_ae(subject, meta(before, "onset was earlier"), corrected(reported, before), FACTS, PROTOCOL)
    with pytest.raises(RuleViolation, match=f"{day(21)} is after {SUBJECT} died"):
        domain.correct_ae(died(day(20), subject), meta(day(21), "later"), corrected(reported, day(21)), FACTS, PROTOCOL)


@pytest.mark.parametrize("leave", ["lost", "completed"])
def test_aes_are_reported_after_the_subject_left_the_study(leave):
    subject = lost(None, day(90)) if leave == "lost" else complete(None, day(90))
    assert report(subject, day(95), ae(day(95))).aes  # safety reporting goes on


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


# ICANS in children (ASTCT 2019): CAPD under 12 years of age, ICE from 12. Ages in calendar years (onset year minus
# year of birth), as at enrolment.


def icans(score: str, value: int, grade: int = 1) -> AEReported:
    """An ICANS with onset on day 5 (2025)."""
    return ae(day(5), category="ICANS", term="ICANS", grade=grade, icans=ICANSFindings(**{score: value}))


def born(year: int | None) -> SubjectFacts:
    return facts(year_of_birth=year)


@pytest.mark.parametrize(("year_of_birth", "age"), [(2014, 11), (2024, 1)])  # 2025 - 2014: 11, maybe 10
def test_a_child_s_icans_is_scored_with_the_capd_not_ice(year_of_birth, age):
    refusal = (
        f"icans.ice_score: {SUBJECT} is {age} at the AE's onset \\(born {year_of_birth}\\); ICANS in children is "
        "graded with the CAPD \\(ASTCT 2019\\): use capd_score for children under 12"
    )
    with pytest.raises(InvalidCommand, match=refusal):
        report(None, day(5), icans("ice_score", 8), born(year_of_birth))
    assert report(None, day(5), icans("capd_score", 4), born(year_of_birth)).aes


@pytest.mark.parametrize(("year_of_birth", "age"), [(2013, 12), (1980, 45)])
def test_an_adult_s_icans_is_scored_with_ice_not_the_capd(year_of_birth, age):
    refusal = (
        f"icans.capd_score: {SUBJECT} is {age} .*the CAPD is for children under 12: use ice_score from 12 years on"
    )
    with pytest.raises(InvalidCommand, match=refusal):
        report(None, day(5), icans("capd_score", 4), born(year_of_birth))
    assert report(None, day(5), icans("ice_score", 8), born(year_of_birth)).aes


@pytest.mark.parametrize("score", ["ice_score", "capd_score"])
def test_without_a_known_year_of_birth_the_score_is_not_checked(score):
    assert report(None, day(5), icans(score, 4), born(None)).aes


def test_a_correction_s_icans_score_is_checked_against_the_age_at_its_onset():
    subject = report(None, day(5), icans("capd_score", 4), born(2014))
    reported = next(iter(subject.aes.values())).fields
    assert isinstance(reported, AEReported)
    fix = AECorrected(
        ae_id=reported.ae_id,
        **ae_fields(day(5), category="ICANS", term="ICANS", grade=1, icans=ICANSFindings(ice_score=8)),
    )
    with pytest.raises(InvalidCommand, match="use capd_score for children under 12"):
        domain.correct_ae(subject, meta(day(5), "ICE entered"), fix, born(2014), PROTOCOL)


@pytest.mark.parametrize(("grade", "expected"), [(1, None), (2, None), (3, "1-2"), (4, "1-2")])
def test_a_capd_of_1_to_8_queries_only_a_grade_outside_1_or_2(grade, expected):
    subject = report(None, day(5), icans("capd_score", 6, grade=grade), born(2018))
    queries = [p for _, p in events(subject) if isinstance(p, DataQueryOpened)]
    assert [q.expected_value for q in queries] == ([expected] if expected else [])
    if expected:
        assert f"grade is {grade}, but the recorded findings give grade 1-2 by ASTCT" in queries[0].text


@pytest.mark.parametrize(("grade", "queried"), [(2, False), (3, True)])
def test_blow_by_oxygen_is_low_flow_grade_2(grade, queried):
    blow_by = CRSFindings(max_temperature_c=38.6, oxygen_delivery="blow_by")
    subject = report(None, day(2), ae(day(2), grade=grade, crs=blow_by))
    assert any(isinstance(p, DataQueryOpened) and p.expected_value == "2" for _, p in events(subject)) is queried


def with_ae(reported: AEReported | None = None, **changes) -> tuple[domain.FollowupSubject, AEReported]:
    """A subject with one AE (onset day 2), its events collected."""
    reported = reported or ae(day(2), **changes)
    subject = report(None, day(2), reported)
    subject.collect_events()
    return subject, reported


def update(subject, on: date, ae_id, **changes) -> domain.FollowupSubject:
    return domain.update_ae(subject, meta(on), AEUpdated(ae_id=ae_id, **changes))


def test_an_update_changes_the_current_grade():
    subject, reported = with_ae()
    subject = update(subject, day(4), reported.ae_id, grade=4)
    assert subject.aes[reported.ae_id].grade == 4
    subject = update(subject, day(9), reported.ae_id, outcome="recovered")
    assert subject.aes[reported.ae_id].grade == 4
    assert len(events(subject)) == 2


def test_each_grade_keeps_the_date_it_was_reached_and_the_latest_is_current():
    subject, reported = with_ae()  # grade 2 at onset, day 2
    subject = update(subject, day(6), reported.ae_id, grade=3)
    subject = update(subject, day(5), reported.ae_id, grade=4)  # entered late: reached before the grade 3
    record = subject.aes[reported.ae_id]
    assert record.grades == [(day(2), 2), (day(6), 3), (day(5), 4)]
    assert record.grade == 3
    subject = update(subject, day(6), reported.ae_id, grade=1)  # the same day: the later entry
    assert subject.aes[reported.ae_id].grade == 1


def test_no_grade_is_reached_after_death_but_the_outcome_follows_it():
    subject, reported = with_ae()
    subject = died(day(20), subject)
    assert update(subject, day(20), reported.ae_id, grade=5).aes[reported.ae_id].grade == 5  # on the day of death
    with pytest.raises(RuleViolation, match=f"new grade is dated {day(21)}, after {SUBJECT} died \\({day(20)}\\)"):
        update(subject, day(21), reported.ae_id, grade=5, outcome="fatal")
    with pytest.raises(RuleViolation, match="only the AE's outcome"):
        update(subject, day(21), reported.ae_id, grade=3)
    [(_, outcome)] = events(update(subject, day(23), reported.ae_id, outcome="fatal"))[-1:]
    assert outcome == AEUpdated(ae_id=reported.ae_id, outcome="fatal")


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
    assert (record.fields, record.onset_on, record.grades) == (fix, day(1), [(day(1), 2), (day(3), 4)])
    assert record.grade == 4  # the update keeps its grade, reached after the corrected onset
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
    assert subject.open_queries == {query.query_id: domain.QueryRecord(query.ae_id, "grade", answered=False)}
    subject = domain.answer_query(
        subject, meta(day(3)), DataQueryAnswered(query_id=query.query_id, answer="Grade 2 is right")
    )
    assert subject.open_queries[query.query_id].answered is True
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


def correct(subject, reported: AEReported, **changes) -> domain.FollowupSubject:
    fix = corrected(reported, day(2), **changes)
    return domain.correct_ae(subject, meta(day(2), "findings re-read"), fix, FACTS, PROTOCOL)


def test_a_correction_that_still_disagrees_restates_the_open_query():
    subject, query = with_query()  # grade 2 reported, the findings give 3
    reported = subject.aes[query.ae_id].fields
    assert isinstance(reported, AEReported)
    subject = domain.answer_query(subject, meta(day(3)), DataQueryAnswered(query_id=query.query_id, answer="ok"))
    subject.collect_events()
    subject = correct(subject, reported, grade=4, crs=CRS_G3)
    [(_, _), (update_meta, restated)] = events(subject)
    assert restated == DataQueryUpdated(
        query_id=query.query_id, recorded_value="4", expected_value="3", text=restated.text
    )
    assert "grade is 4, but the recorded findings give grade 3" in restated.text
    assert update_meta.recorded_by == domain.RULES
    assert list(subject.open_queries) == [query.query_id]  # still one query
    assert subject.open_queries[query.query_id].answered is False  # to be answered again
    with pytest.raises(RuleViolation, match="has not been answered yet"):
        domain.close_query(subject, meta(day(4)), DataQueryClosed(query_id=query.query_id, resolution="done"))


def test_a_correction_that_agrees_leaves_the_open_query_to_the_monitor():
    subject, query = with_query()
    reported = subject.aes[query.ae_id].fields
    assert isinstance(reported, AEReported)
    subject = correct(subject, reported, grade=3, crs=CRS_G3)
    assert [type(p) for _, p in events(subject)][-1:] == [AECorrected]
    assert list(subject.open_queries) == [query.query_id]


def test_a_closed_query_is_not_restated_a_new_one_is_opened():
    subject, query = with_query()
    reported = subject.aes[query.ae_id].fields
    assert isinstance(reported, AEReported)
    subject = domain.answer_query(subject, meta(day(3)), DataQueryAnswered(query_id=query.query_id, answer="ok"))
    subject = domain.close_query(subject, meta(day(4)), DataQueryClosed(query_id=query.query_id, resolution="ok"))
    subject.collect_events()
    [_, (_, opened)] = events(correct(subject, reported, grade=4, crs=CRS_G3))
    assert isinstance(opened, DataQueryOpened) and opened.query_id != query.query_id


def test_queries_are_one_per_ae():
    subject, _ = with_query()
    other = ae(day(2), grade=1, crs=CRS_G3)
    [_, (_, opened)] = events(report(subject, day(2), other))
    assert isinstance(opened, DataQueryOpened) and opened.ae_id == other.ae_id
    assert len(subject.open_queries) == 2


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


def recorded(subject: domain.FollowupSubject) -> str:
    """The response of the assessment recorded last."""
    return subject.assessments[-1].result.response


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
    assert recorded(assess(None, day(28), response("W4", result, marrow_blasts_pct=4.99, **counts))) == result
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
    assert recorded(assess(None, day(28), response("W4", "CRi", **GOOD_COUNTS | low))) == "CRi"


def test_a_cr_at_the_count_thresholds_is_a_cr_not_a_cri():
    assert recorded(assess(None, day(28), response("W4", "CR", **GOOD_COUNTS))) == "CR"
    assert "ANC and platelets both meet the CR thresholds: this is a CR" in refused_as(
        response("W4", "CRi", **GOOD_COUNTS)
    )


def test_counts_not_given_are_not_judged():
    assert recorded(assess(None, day(28), response("W4", "CR"))) == "CR"
    assert recorded(assess(None, day(28), response("W4", "CRi", anc_10e9_per_l=1.5))) == "CRi"  # platelets unknown


def test_all_problems_are_named_at_once():
    detail = refused_as(response("W4", "CR", marrow_blasts_pct=8, circulating_blasts=True, anc_10e9_per_l=0.1))
    assert detail.count(";") == 2 and detail.startswith("CR at W4: marrow blasts")


def in_remission() -> domain.FollowupSubject:
    subject = assess(None, day(28), response("W4", "CR"))
    subject.collect_events()
    return subject


def test_a_relapse_follows_a_remission():
    never = r"A relapse follows a CR or CRi, and .* has never been in remission on record; record PD .* or NR"
    with pytest.raises(RuleViolation, match=never):
        assess(None, day(28), response("W4", "RELAPSE"))
    not_responding = assess(None, day(28), response("W4", "NR"))
    with pytest.raises(RuleViolation, match="never been in remission"):
        assess(not_responding, day(56), response("W8", "RELAPSE"))
    remission = in_remission()
    assert remission.in_remission
    relapsed = assess(remission, day(56), response("W8", "RELAPSE", cd19_status="CD19-"))
    assert recorded(relapsed) == "RELAPSE" and not relapsed.in_remission
    second_remission = assess(relapsed, day(84), response("W12", "CR"))
    assert second_remission.in_remission
    entered_late = assess(second_remission, day(70), response("UNSCHEDULED", "NR"))
    assert entered_late.in_remission  # the CR of day 84 is still the latest


def test_a_relapse_persists_and_is_recorded_again():
    relapsed = assess(in_remission(), day(56), response("W8", "RELAPSE"))
    relapsed = assess(relapsed, day(70), response("UNSCHEDULED", "RELAPSE"))
    relapsed = assess(relapsed, day(84), response("W12", "RELAPSE"))
    assert [a.result.response for a in relapsed.assessments] == ["CR", "RELAPSE", "RELAPSE", "RELAPSE"]


def test_a_relapse_needs_a_remission_dated_before_it():
    remission = assess(None, day(56), response("W8", "CR"))
    with pytest.raises(RuleViolation, match="never been in remission"):
        assess(remission, day(28), response("W4", "RELAPSE"))  # entered late, before the remission


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
        assert recorded(assess(in_remission(), day(56), payload)) == "RELAPSE"
    else:
        with pytest.raises(InvalidCommand, match=r"a relapse needs marrow blasts >= 5\.0% or extramedullary disease"):
            assess(in_remission(), day(56), payload)


@pytest.mark.parametrize(
    ("mrd_pct", "negative", "contradiction"),
    [
        (0.009, True, None),
        (0.01, True, "mrd_negative is true but mrd_pct 0.01% is not below the protocol's 0.01%"),
        (0.01, False, None),
        (0.009, False, "mrd_negative is false but mrd_pct 0.009% is below the protocol's 0.01%"),
    ],
)
def test_mrd_negative_must_agree_with_the_mrd_value(mrd_pct, negative, contradiction):
    payload = response("W4", "CR", mrd_pct=mrd_pct, mrd_assay="flow", mrd_negative=negative)
    if contradiction is None:
        assert assess(None, day(28), payload).assessments[-1].result == payload
    else:
        detail = refused_as(payload)
        assert contradiction in detail and "leave mrd_negative out" in detail


@pytest.mark.parametrize(("mrd_pct", "negative"), [(0.0, True), (0.0099, True), (0.01, False), (0.5, False)])
def test_mrd_negative_follows_from_the_mrd_value_and_is_stored(mrd_pct, negative):
    payload = response("W4", "CR", mrd_pct=mrd_pct, mrd_assay="flow")
    [(_, stored)] = events(assess(None, day(28), payload))
    assert stored == payload.model_copy(update={"mrd_negative": negative})


def test_mrd_negative_without_a_value_is_kept_as_reported():
    [(_, stored)] = events(assess(None, day(28), response("W4", "CR", mrd_negative=True)))
    assert (stored.mrd_pct, stored.mrd_negative) == (None, True)


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


@pytest.mark.parametrize("timepoint", ["M6", "M9", "M12"])
def test_months_6_to_12_are_for_subjects_in_long_term_follow_up(timepoint):
    not_in_ltfu = r"is not in long-term follow-up; record it as UNSCHEDULED"
    with pytest.raises(RuleViolation, match=f"{timepoint} is a long-term follow-up assessment.*{not_in_ltfu}"):
        assess(assess(None, day(84), response("W12", "NR")), day(182), response(timepoint, "NR"))
    with pytest.raises(RuleViolation, match=not_in_ltfu):
        assess(None, day(182), response(timepoint, "CR"))
    subject = assess(in_ltfu(), day(182), response(timepoint, "CR"))
    with pytest.raises(RuleViolation, match=f"The {timepoint} response .* already recorded"):
        assess(subject, day(190), response(timepoint, "CR"))
    # A week-12 remission stored before LongTermFollowUpStarted existed counts the same.
    old = domain.FollowupSubject.record_into(None, meta(day(84)), response("W12", "CR"))
    assert recorded(assess(old, day(182), response(timepoint, "CRi"))) == "CRi"


def test_a_relapse_in_long_term_follow_up():
    subject = assess(in_ltfu(), day(182), response("M6", "RELAPSE", cd19_status="CD19+"))
    assert recorded(assess(subject, day(273), response("M9", "RELAPSE"))) == "RELAPSE"


# Progressive disease: never in remission, and a rise of >= 25% (relative) in marrow or circulating blasts over
# the previous assessment, or new extramedullary disease.


def pd(**values) -> ResponseAssessed:
    return response("UNSCHEDULED", "PD", **values)


def refractory(**values) -> domain.FollowupSubject:
    """No response at week 4 (day 28): marrow blasts 40% unless given."""
    subject = assess(None, day(28), response("W4", "NR", **values))
    subject.collect_events()
    return subject


@pytest.mark.parametrize(("blasts", "progressed"), [(50.0, True), (49.9, False), (40.0, False), (30.0, False)])
def test_pd_needs_marrow_blasts_up_by_the_protocol_rise(blasts, progressed):
    assert PROTOCOL.response.pd_min_blast_increase_pct == 25.0
    if progressed:
        assert recorded(assess(refractory(), day(40), pd(marrow_blasts_pct=blasts))) == "PD"
    else:
        no_rise = (
            f"PD needs a rise of at least 25.0% in marrow or circulating blasts over the previous assessment, or new "
            f"extramedullary disease: on {day(28)} marrow blasts 40.0%, now marrow blasts {blasts}%. Record NR"
        )
        with pytest.raises(RuleViolation, match=re.escape(no_rise)):
            assess(refractory(), day(40), pd(marrow_blasts_pct=blasts))


def test_pd_from_no_blasts_is_any_rise():
    assert recorded(assess(refractory(marrow_blasts_pct=0.0), day(40), pd(marrow_blasts_pct=0.5))) == "PD"


@pytest.mark.parametrize(
    ("before", "now", "progressed"),
    [
        (10.0, 12.5, True),
        (10.0, 12.4, False),
        (None, 90.0, False),  # not given before: nothing to compare
        (10.0, None, False),
    ],
)
def test_pd_by_circulating_blasts_when_both_assessments_give_them(before, now, progressed):
    subject = refractory(circulating_blasts_pct=before)
    payload = pd(marrow_blasts_pct=40.0, circulating_blasts_pct=now)
    if progressed:
        assert recorded(assess(subject, day(40), payload)) == "PD"
    else:
        with pytest.raises(RuleViolation, match=r"PD needs a rise of at least 25\.0%"):
            assess(subject, day(40), payload)


@pytest.mark.parametrize(("before", "progressed"), [(None, True), (False, True), (True, False)])
def test_pd_by_new_extramedullary_disease(before, progressed):
    subject = refractory(extramedullary_disease=before)
    payload = pd(marrow_blasts_pct=40.0, extramedullary_disease=True)
    if progressed:
        assert recorded(assess(subject, day(40), payload)) == "PD"
    else:
        with pytest.raises(RuleViolation, match="or new extramedullary disease"):
            assess(subject, day(40), payload)


def test_pd_without_an_earlier_assessment_needs_extramedullary_disease():
    with pytest.raises(RuleViolation, match=r"has none on record before this one.*Record NR otherwise"):
        assess(None, day(28), pd(marrow_blasts_pct=90.0))
    assert recorded(assess(None, day(28), pd(marrow_blasts_pct=90.0, extramedullary_disease=True))) == "PD"


def test_pd_is_compared_with_the_assessment_dated_last_before_it():
    subject = assess(refractory(), day(56), response("W8", "NR", marrow_blasts_pct=80.0))
    # Entered late, dated day 40: compared with week 4 (40%), not with week 8 (80%).
    assert recorded(assess(subject, day(40), pd(marrow_blasts_pct=50.0))) == "PD"
    with pytest.raises(RuleViolation, match=f"on {day(56)} marrow blasts 80.0%"):
        assess(subject, day(60), pd(marrow_blasts_pct=90.0))


def test_pd_persists_each_against_the_previous_assessment():
    subject = assess(refractory(), day(40), pd(marrow_blasts_pct=50.0))
    subject = assess(subject, day(56), response("W8", "PD", marrow_blasts_pct=62.5))
    with pytest.raises(RuleViolation, match=f"on {day(56)} marrow blasts 62.5%"):
        assess(subject, day(70), pd(marrow_blasts_pct=70.0))
    assert [a.result.response for a in subject.assessments] == ["NR", "PD", "PD"]


def test_pd_is_for_a_subject_never_in_remission():
    with pytest.raises(RuleViolation, match=f"was in remission \\(from {day(28)}\\).*record RELAPSE"):
        assess(in_remission(), day(56), pd(marrow_blasts_pct=60.0, extramedullary_disease=True))
    # A PD dated before the first remission (entered late) is judged on what came before it.
    subject = assess(refractory(), day(56), response("W8", "CR"))
    assert recorded(assess(subject, day(40), pd(marrow_blasts_pct=60.0))) == "PD"


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
    assert alive(subject, day(95))  # survival status is collected after the end of follow-up


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


def test_loss_and_completion_are_not_dated_before_a_record_of_another_service():
    ld_day = facts(infused=False, last_record_on=day(-3))  # lymphodepletion, recorded by treatment
    loss = LostToFollowUp(last_contact_on=day(-4))
    with pytest.raises(InvalidCommand, match=f"dated {day(-4)}, before data already recorded .*\\(on {day(-3)}\\)"):
        domain.lose_to_follow_up(None, meta(day(-4)), loss, ld_day)
    with pytest.raises(InvalidCommand, match=f"last_contact_on \\({day(-4)}\\) is before data already recorded"):
        domain.lose_to_follow_up(None, meta(day(-3)), loss, ld_day)
    later = facts(last_record_on=day(95))
    done = StudyCompleted(completed="main_follow_up")
    with pytest.raises(InvalidCommand, match=f"dated {day(90)}, before data already recorded .*\\(on {day(95)}\\)"):
        domain.complete_study(None, meta(day(90), "no W12"), done, later, PROTOCOL)
    assert domain.complete_study(None, meta(day(95), "no W12"), done, later, PROTOCOL).completed_on == day(95)


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


def test_a_week12_remission_without_the_ltfu_event_still_counts_as_long_term_follow_up():
    # A week-12 CR stored as schema v1 (before LongTermFollowUpStarted existed) has no such event.
    subject = domain.FollowupSubject.record_into(None, meta(day(84)), response("W12", "CR"))
    with pytest.raises(RuleViolation, match="in long-term follow-up"):
        complete(subject, day(90))
    assert complete(subject, day(365), "long_term_follow_up").completed_on == day(365)


# --- survival status ----------------------------------------------------------------------------


def death_news(subject, on: date, died_on: date, known: SubjectFacts | None = FACTS, hour: int = 9):
    contact = SurvivalStatusRecorded(status="dead", method="phone", died_on=died_on, primary_cause="adverse_event")
    contact_meta = meta(on).model_copy(update={"occurred_at": datetime(on.year, on.month, on.day, hour, tzinfo=UTC)})
    return domain.record_survival_status(subject, contact_meta, contact, known, PROTOCOL)


def test_an_alive_contact_is_a_clinical_record_that_completes_its_survival_visit():
    subject = alive(None, day(112), code="SURV_W16")
    [(_, contact)] = events(subject)
    assert contact == SurvivalStatusRecorded(status="alive", method="phone", visit_code="SURV_W16")
    assert (subject.visits_completed, subject.last_record_on) == ({"SURV_W16": day(112)}, day(112))
    with pytest.raises(RuleViolation, match=f"Visit SURV_W16 of {SUBJECT} was already completed on {day(112)}"):
        alive(subject, day(113), code="SURV_W16")


def test_a_survival_contact_completes_only_a_survival_visit_of_the_protocol():
    refusal = f"Visit code SURV_W99 is not a survival contact in protocol {re.escape(PROTOCOL.version)}; valid codes: "
    with pytest.raises(InvalidCommand, match=refusal + "SURV_W16, SURV_W20, SURV_W24[.]$"):
        alive(None, day(112), code="SURV_W99")


@pytest.mark.parametrize(("study_day", "allowed"), [(168, True), (169, False)])
def test_survival_status_is_collected_to_week_24(study_day, allowed):
    assert PROTOCOL.followup.survival_end_day == 168
    if allowed:
        assert alive(None, day(study_day))
        assert death_news(None, day(study_day), day(150)).died_on == day(150)
    else:
        window = f"to study day 168 \\(week 24\\), and to day 365 in long-term follow-up, which {SUBJECT} is not in"
        for contact in (lambda: alive(None, day(study_day)), lambda: death_news(None, day(study_day), day(150))):
            with pytest.raises(RuleViolation, match=f"{window}; this contact is on day 169.*recorded as a death"):
                contact()


@pytest.mark.parametrize(("study_day", "allowed"), [(365, True), (366, False)])
def test_survival_status_is_collected_to_month_12_in_long_term_follow_up(study_day, allowed):
    if allowed:
        assert alive(in_ltfu(), day(study_day))
    else:
        with pytest.raises(RuleViolation, match="and to day 365 in long-term follow-up; this contact is on day 366"):
            alive(in_ltfu(), day(study_day))


@pytest.mark.parametrize(
    ("leave", "seen_alive", "died_on"),
    [("lost", 150, 155), ("completed", 120, 140), ("completed long-term follow-up", 365, 365)],
)
def test_survival_status_is_collected_after_the_follow_up_ended(leave, seen_alive, died_on):
    if leave == "lost":  # a survival sweep finds the subject
        subject = lost(None, day(100), last_contact=day(90))
    elif leave == "completed":
        subject = complete(None, day(90))
    else:
        subject = complete(in_ltfu(), day(365), "long_term_follow_up")
    subject = alive(subject, day(seen_alive))
    subject.collect_events()
    subject = death_news(subject, day(died_on), day(died_on))
    assert [type(p) for _, p in events(subject)] == [SurvivalStatusRecorded, SubjectDied]


def test_no_alive_contact_after_death_or_withdrawal():
    with pytest.raises(RuleViolation, match=f"{day(121)} is after {SUBJECT} died \\({day(120)}\\)"):
        alive(died(day(120)), day(121))
    with pytest.raises(RuleViolation, match=f"after {SUBJECT} withdrew consent \\({day(100)}\\)"):
        alive(None, day(101), facts(withdrawn_on=day(100)))


def test_the_news_of_a_death_records_the_death_caused_by_it():
    subject = death_news(alive(None, day(100)), day(130), day(125), hour=15)
    [_, (contact_meta, contact), (death_meta, death)] = events(subject)
    assert isinstance(contact, SurvivalStatusRecorded) and contact.status == "dead"
    assert death == SubjectDied(primary_cause="adverse_event")
    assert death_meta.occurred_at == at(day(125), 15)  # on the date of death, at the contact's time
    assert death_meta.recorded_by == INVESTIGATOR == contact_meta.recorded_by  # the person who learned it
    assert death_meta.causation_id == contact_meta.event_id and death_meta.event_id != contact_meta.event_id
    assert death_meta.correlation_id == contact_meta.correlation_id
    assert (subject.died_on, subject.last_record_on) == (day(125), day(125))  # the news (day 130) is not contact


def test_the_news_of_a_recorded_death_records_only_the_contact():
    subject = died(day(120))
    subject.collect_events()
    assert [type(p) for _, p in events(death_news(subject, day(130), day(120)))] == [SurvivalStatusRecorded]
    with pytest.raises(
        RuleViolation,
        match=f"death of {SUBJECT} is recorded on {day(120)}, and this contact gives "
        f"{day(119)}: correct the recorded death first",
    ):
        death_news(subject, day(130), day(119))


def test_the_date_of_death_comes_from_the_contact_and_fits_the_record():
    with pytest.raises(InvalidCommand, match=f"died_on \\({day(131)}\\) is after the contact \\({day(130)}\\)"):
        death_news(None, day(130), day(131))
    assert death_news(None, day(130), day(130)).died_on == day(130)
    with pytest.raises(
        InvalidCommand, match=f"date of death {day(99)} is before follow-up data already recorded .*\\(on {day(100)}\\)"
    ):
        death_news(alive(None, day(100)), day(130), day(99))
    with pytest.raises(InvalidCommand, match="before enrolment"):
        death_news(None, day(130), ENROLLED_ON - timedelta(days=1))


def test_a_survival_contact_needs_an_infusion_and_comes_after_it():
    with pytest.raises(RuleViolation, match="no infusion recorded yet") as refused:
        death_news(None, day(10), day(5), facts(infused=False))
    assert refused.value.retryable is True
    with pytest.raises(RuleViolation, match="before the infusion"):
        death_news(None, day(-1), day(-2))


def test_the_news_of_a_death_comes_after_withdrawal_too():
    subject = death_news(None, day(130), day(125), facts(withdrawn_on=day(100)))
    assert subject.died_on == day(125)
