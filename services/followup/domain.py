"""Follow-up: adverse events, data queries, safety reports, responses, persistence, visits, survival
contacts and the ways a subject leaves the study. Pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from uuid import UUID, uuid4

from services.followup.grading import derived_grade
from shared import clinical
from shared.access.policy import Action
from shared.commands import Command
from shared.contract.envelope import RecordedBy
from shared.contract.events import (
    AECorrected,
    AEFields,
    AEReported,
    AEUpdated,
    DataQueryAnswered,
    DataQueryClosed,
    DataQueryOpened,
    DataQueryUpdated,
    LongTermFollowUpStarted,
    LostToFollowUp,
    Payload,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    SurvivalStatusRecorded,
    VisitCompleted,
)
from shared.errors import InvalidCommand, NotFound, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, SubjectStream
from shared.facts import SubjectFacts
from shared.protocol import Protocol, ResponseCriteria

# Events the rules raise themselves (a data query, the start of long-term follow-up) are attributed
# to the rules engine, caused by the event that triggered them.
RULES = RecordedBy(user_id="ucart-rules", role="system")


@dataclass
class AERecord:
    fields: AEFields
    onset_on: date
    # Each grade with the date it was reached: the onset grade (replaced by a correction), then the updates'.
    grades: list[tuple[date, int]]
    reports: set[str] = field(default_factory=set)

    @property
    def grade(self) -> int:
        """The grade reached last (updates may be entered out of order; on one day, the last entered)."""
        return max(reversed(self.grades), key=lambda dated: dated[0])[1]


@dataclass
class QueryRecord:
    ae_id: UUID | None
    field: str
    answered: bool = False


@dataclass(frozen=True)
class Assessment:
    at: datetime
    result: ResponseAssessed


class FollowupSubject(SubjectStream):
    def initialise(self) -> None:
        self.aes: dict[UUID, AERecord] = {}
        self.open_queries: dict[UUID, QueryRecord] = {}
        self.assessments: list[Assessment] = []
        self.visits_completed: dict[str, date] = {}
        self.long_term_follow_up = False
        self.week12_remission = False
        self.died_on: date | None = None
        self.lost_on: date | None = None
        self.completed_on: date | None = None
        self.last_record_on: date | None = None  # clinical date of the latest clinical record

    def when(self, meta: EventMeta, payload: Payload) -> None:
        day = meta.occurred_at.date()
        if payload.is_clinical_record():  # queries, reports, the news of a death say nothing of the subject
            self.last_record_on = max(self.last_record_on or day, day)
        match payload:
            case AEReported():
                self.aes[payload.ae_id] = AERecord(payload, day, [(day, payload.grade)])
            case AECorrected():
                before = self.aes[payload.ae_id]
                grades = [(day, payload.grade), *before.grades[1:]]  # the updates keep their grades
                self.aes[payload.ae_id] = AERecord(payload, day, grades, before.reports)
            case AEUpdated() if payload.grade is not None:
                self.aes[payload.ae_id].grades.append((day, payload.grade))
            case SafetyReportSubmitted():
                self.aes[payload.ae_id].reports.add(payload.report)
            case DataQueryOpened():
                self.open_queries[payload.query_id] = QueryRecord(payload.ae_id, payload.field)
            case DataQueryUpdated():
                self.open_queries[payload.query_id].answered = False  # restated: to be answered again
            case DataQueryAnswered():
                self.open_queries[payload.query_id].answered = True
            case DataQueryClosed():
                self.open_queries.pop(payload.query_id, None)
            case ResponseAssessed():
                self.assessments.append(Assessment(meta.occurred_at, payload))
                if payload.timepoint == "W12":
                    self.week12_remission = clinical.in_remission(payload.response)
            case PersistenceSampled() | SurvivalStatusRecorded() if payload.visit_code:
                self.visits_completed[payload.visit_code] = day
            case VisitCompleted():
                self.visits_completed[payload.visit_code] = day
            case LongTermFollowUpStarted():
                self.long_term_follow_up = True
            case LostToFollowUp():
                self.lost_on = day
            case StudyCompleted():
                self.completed_on = day
            case SubjectDied():
                self.died_on = day

    @property
    def off_study(self) -> tuple[str, date] | None:
        for what, on in (
            ("died", self.died_on),
            ("was lost to follow-up", self.lost_on),
            ("completed the study", self.completed_on),
        ):
            if on:
                return what, on
        return None

    @property
    def in_long_term_follow_up(self) -> bool:
        # (a week-12 remission recorded before LongTermFollowUpStarted existed counts the same)
        return self.long_term_follow_up or self.week12_remission

    @property
    def in_remission(self) -> bool:
        """In remission (CR or CRi) at the assessment dated last."""
        latest = max(self.assessments, key=lambda a: a.at, default=None)
        return latest is not None and clinical.in_remission(latest.result.response)

    @property
    def assessed_timepoints(self) -> set[str]:
        return {a.result.timepoint for a in self.assessments}

    def open_query_about(self, ae_id: UUID, field: str) -> UUID | None:
        return next((q for q, about in self.open_queries.items() if (about.ae_id, about.field) == (ae_id, field)), None)

    def previous_assessment(self, at: datetime) -> Assessment | None:
        """The latest assessment dated before `at`."""
        return max((a for a in self.assessments if a.at < at), key=lambda a: a.at, default=None)

    def remission_before(self, at: datetime) -> date | None:
        """The date of the first CR or CRi dated before `at`, if any."""
        remissions = [a.at for a in self.assessments if a.at < at and clinical.in_remission(a.result.response)]
        return min(remissions).date() if remissions else None


# --- who is followed up, and when ---------------------------------------------------------------


def _require_enrolled(meta: EventMeta, facts: SubjectFacts | None) -> SubjectFacts:
    if facts is not None and facts.screen_failed:  # final: unlike "not yet known", not retryable
        raise RuleViolation(f"Subject {meta.subject_id} failed screening and is not followed up.")
    if facts is None or facts.enrolled_on is None:
        raise SubjectNotFound(
            f"Follow-up has no enrolment for {meta.subject_id}: check the study code, "
            "or retry in a few seconds if the subject was just enrolled.",
            retryable=True,
        )
    return facts


def _require_infused(meta: EventMeta, facts: SubjectFacts | None, what: str) -> tuple[SubjectFacts, date]:
    """The subject's facts and infusion day; `what` is recorded from the infusion on."""
    facts = _require_enrolled(meta, facts)
    if facts.infused_on is None:
        raise RuleViolation(
            f"{what} are recorded from the UCAR-T infusion on, and {meta.subject_id} has no "
            "infusion recorded yet. Record the infusion first (if it was just recorded, "
            "retry in a few seconds).",
            retryable=True,
        )
    day = meta.occurred_at.date()
    if day < facts.infused_on:
        raise RuleViolation(
            f"{what}: {day} is before the infusion ({facts.infused_on}); check the date (study day 0 is the infusion)."
        )
    return facts, facts.infused_on


def _not_after_death(subject: FollowupSubject | None, meta: EventMeta, what: str) -> None:
    """Nothing clinical is dated after a death (only its consequences: outcomes, reports, the news)."""
    day = meta.occurred_at.date()
    if subject and subject.died_on and day > subject.died_on:
        raise RuleViolation(f"{what}: {day} is after {meta.subject_id} died ({subject.died_on}); check the date.")


def _not_after_withdrawal(meta: EventMeta, facts: SubjectFacts, what: str) -> None:
    day = meta.occurred_at.date()
    if facts.withdrawn_on and day > facts.withdrawn_on:
        raise RuleViolation(
            f"{what}: {day} is after {meta.subject_id} withdrew consent ({facts.withdrawn_on}); "
            "no study procedures after withdrawal."
        )


def _require_followed(
    subject: FollowupSubject | None,
    meta: EventMeta,
    facts: SubjectFacts | None,
    what: str,
    *,
    after_leaving: bool = False,
) -> tuple[SubjectFacts, date]:
    """The facts and infusion day, for `what` dated from the infusion on, not after death, and, unless
    `after_leaving` (subsequent therapies: the efficacy analyses need them), not after the subject left."""
    known, infused_on = _require_infused(meta, facts, what)
    _not_after_death(subject, meta, what)
    if not after_leaving:
        left = subject.off_study if subject else None
        day = meta.occurred_at.date()
        if left and day > left[1]:
            raise RuleViolation(f"{what}: {day} is after {meta.subject_id} {left[0]} ({left[1]}); check the date.")
        _not_after_withdrawal(meta, known, what)
    return known, infused_on


def _not_before_recorded_data(
    subject: FollowupSubject | None, meta: EventMeta, facts: SubjectFacts, what: str
) -> date | None:
    """The latest clinical record of the subject, here or in the services follow-up learns from (an
    infusion, a lymphodepletion day): the subject was on study that day, so `what` is not dated before it."""
    here = subject.last_record_on if subject else None
    latest = max((d for d in (facts.enrolled_on, facts.infused_on, facts.last_record_on, here) if d), default=None)
    if latest and meta.occurred_at.date() < latest:
        raise InvalidCommand(
            f"{what} is dated {meta.occurred_at.date()}, before data already recorded for {meta.subject_id} "
            f"(on {latest}); check the date."
        )
    return latest


def _derived_meta(cause: EventMeta, recorded_by: RecordedBy = RULES, occurred_at: datetime | None = None) -> EventMeta:
    """The metadata of an event a rule records because of another: same correlation, caused by it."""
    return cause.model_copy(
        update={
            "recorded_by": recorded_by,
            "causation_id": cause.event_id,
            "reason": None,
            "event_id": uuid4(),
            "occurred_at": occurred_at or cause.occurred_at,
        }
    )


# --- adverse events -----------------------------------------------------------------------------


def _require_in_ae_period(subject: FollowupSubject | None, meta: EventMeta, facts: SubjectFacts | None) -> SubjectFacts:
    """AEs are recorded from enrolment (consent) on, lymphodepletion included, and also after withdrawal,
    loss or completion (safety reporting goes on); none begins after death."""
    facts = _require_enrolled(meta, facts)
    onset = meta.occurred_at.date()
    if facts.enrolled_on and onset < facts.enrolled_on:  # (known: enrolled)
        raise InvalidCommand(
            f"The AE's onset {onset} is before {meta.subject_id} was enrolled ({facts.enrolled_on}): the AE "
            "period starts at enrolment. Check the onset date; a condition that began before enrolment is "
            "medical history, not an AE."
        )
    _not_after_death(subject, meta, "Adverse events")
    return facts


def _check_ae(meta: EventMeta, ae: AEFields) -> None:
    if "not_specified" in ae.seriousness_criteria:
        raise InvalidCommand(
            "seriousness_criteria: 'not_specified' only marks AEs recorded before the criteria "
            "were captured; give the ICH E2A criteria that apply."
        )
    if ae.aware_at < meta.occurred_at:
        raise InvalidCommand(
            f"aware_at ({ae.aware_at.isoformat()}) is before the onset "
            f"({meta.occurred_at.isoformat()}): the site cannot know of an AE before it starts."
        )


def _check_encephalopathy_score(meta: EventMeta, ae: AEFields, facts: SubjectFacts) -> None:
    """ASTCT 2019: ICANS encephalopathy is scored with ICE from 12 years of age, with CAPD below."""
    if ae.icans is None or facts.year_of_birth is None:  # (facts learned before the year of birth was)
        return
    age = clinical.age_in_years(facts.year_of_birth, meta.occurred_at.year)
    child = clinical.PAEDIATRIC_ICANS_BELOW_YEARS
    born = f"{meta.subject_id} is {age} at the AE's onset (born {facts.year_of_birth})"
    if ae.icans.ice_score is not None and age < child:
        raise InvalidCommand(
            f"icans.ice_score: {born}; ICANS in children is graded with the CAPD (ASTCT 2019): "
            f"use capd_score for children under {child}."
        )
    # (Counted in calendar years, as at enrolment: in the year of their 12th birthday a child counts as 12.)
    if ae.icans.capd_score is not None and age >= child:
        raise InvalidCommand(
            f"icans.capd_score: {born}; the CAPD is for children under {child}: use ice_score from {child} years on."
        )


def _grade_query(
    subject: FollowupSubject, meta: EventMeta, ae_id: UUID, ae: AEFields, protocol: Protocol
) -> FollowupSubject:
    """Ask when the findings allow other grades than the investigator's: one open query per AE and field,
    restated when a correction still disagrees. When it agrees, closing the query is the monitor's call."""
    derived = derived_grade(ae.category, ae.crs, ae.icans, ae.gvhd, protocol.grading)
    if derived is None or derived.includes(ae.grade):
        return subject
    scale = "MAGIC" if ae.category == "GVHD" else "ASTCT"
    values = dict(
        recorded_value=str(ae.grade),
        expected_value=str(derived),
        text=f"The investigator's {ae.category} grade is {ae.grade}, but the recorded findings give grade "
        f"{derived} by {scale} ({protocol.version}). Please check the grade or the findings, and answer.",
    )
    open_query = subject.open_query_about(ae_id, "grade")
    query: Payload = (
        DataQueryUpdated(query_id=open_query, **values)
        if open_query
        else DataQueryOpened(ae_id=ae_id, field="grade", **values)
    )
    return FollowupSubject.record_into(subject, _derived_meta(meta), query)


def report_ae(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: AEReported,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    known = _require_in_ae_period(subject, meta, facts)
    _check_ae(meta, payload)
    _check_encephalopathy_score(meta, payload, known)
    if subject and payload.ae_id in subject.aes:
        raise RuleViolation(
            f"Adverse event {payload.ae_id} is already recorded for {meta.subject_id}; "
            "to change it, send an update or a correction."
        )
    subject = FollowupSubject.record_into(subject, meta, payload)
    return _grade_query(subject, meta, payload.ae_id, payload, protocol)


def _known_ae(subject: FollowupSubject | None, meta: EventMeta, ae_id: UUID) -> AERecord:
    if subject is None or ae_id not in subject.aes:
        raise NotFound(f"No adverse event {ae_id} is recorded for {meta.subject_id}; check the ae_id.")
    return subject.aes[ae_id]


def update_ae(subject: FollowupSubject | None, meta: EventMeta, payload: AEUpdated) -> FollowupSubject:
    """occurred_at is the date the new grade was reached (or the outcome came)."""
    ae = _known_ae(subject, meta, payload.ae_id)
    day = meta.occurred_at.date()
    if day < ae.onset_on:
        raise InvalidCommand(
            f"The update is dated {day}, before the AE's onset ({ae.onset_on}); check the date (a grade at "
            "onset is corrected with a correction of the report)."
        )
    died_on = subject.died_on if subject else None
    if payload.grade is not None and died_on and day > died_on:
        raise RuleViolation(
            f"The new grade is dated {day}, after {meta.subject_id} died ({died_on}); check the date. After "
            "a death only the AE's outcome (e.g. fatal) is recorded, without a grade."
        )
    return FollowupSubject.record_into(subject, meta, payload)


def correct_ae(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: AECorrected,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    _known_ae(subject, meta, payload.ae_id)
    known = _require_in_ae_period(subject, meta, facts)  # the corrected onset
    if not (meta.reason or "").strip():
        raise InvalidCommand("A correction needs a reason: say why the earlier report was wrong.")
    _check_ae(meta, payload)
    _check_encephalopathy_score(meta, payload, known)
    subject = FollowupSubject.record_into(subject, meta, payload)
    return _grade_query(subject, meta, payload.ae_id, payload, protocol)


# --- data queries and safety reports ------------------------------------------------------------


def _open_query(subject: FollowupSubject | None, meta: EventMeta, query_id: UUID) -> FollowupSubject:
    if subject is None or query_id not in subject.open_queries:
        raise NotFound(
            f"No open data query {query_id} for {meta.subject_id}: check the query id "
            "(a closed query cannot be changed)."
        )
    return subject


def answer_query(subject: FollowupSubject | None, meta: EventMeta, payload: DataQueryAnswered) -> FollowupSubject:
    return FollowupSubject.record_into(_open_query(subject, meta, payload.query_id), meta, payload)


def close_query(subject: FollowupSubject | None, meta: EventMeta, payload: DataQueryClosed) -> FollowupSubject:
    subject = _open_query(subject, meta, payload.query_id)
    if not subject.open_queries[payload.query_id].answered:
        raise RuleViolation(f"Data query {payload.query_id} has not been answered yet; the site answers first.")
    return FollowupSubject.record_into(subject, meta, payload)


def submit_safety_report(
    subject: FollowupSubject | None, meta: EventMeta, payload: SafetyReportSubmitted
) -> FollowupSubject:
    ae = _known_ae(subject, meta, payload.ae_id)
    if not ae.fields.serious:
        raise RuleViolation(f"Adverse event {payload.ae_id} is not serious: no expedited report is due.")
    if payload.report == "susar_to_regulator" and not clinical.susar(
        ae.fields.serious, ae.fields.suspected, ae.fields.expected
    ):
        raise RuleViolation(
            f"Adverse event {payload.ae_id} is not a SUSAR (serious, suspected and unexpected); "
            "record expectedness first if it has changed."
        )
    if payload.report in ae.reports:
        raise RuleViolation(f"The {payload.report.replace('_', ' ')} report of {payload.ae_id} is already recorded.")
    if payload.received_at < ae.fields.aware_at:
        raise InvalidCommand("received_at is before the site became aware of the AE; check the time.")
    return FollowupSubject.record_into(subject, meta, payload)


# --- response assessments -----------------------------------------------------------------------


def assess_response(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: ResponseAssessed,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    _require_followed(subject, meta, facts, "Response assessments")
    _check_timepoint(subject, meta, payload)
    payload = _with_mrd_status(payload, protocol.response)
    _check_response_criteria(payload, protocol)
    _check_disease_course(subject, meta, payload, protocol.response)
    subject = FollowupSubject.record_into(subject, meta, payload)
    if (
        payload.timepoint == "W12"
        and clinical.enters_long_term_follow_up(payload.response)
        and not subject.long_term_follow_up
    ):
        start = LongTermFollowUpStarted(week12_response=payload.response)
        subject = FollowupSubject.record_into(subject, _derived_meta(meta), start)
    return subject


def _check_timepoint(subject: FollowupSubject | None, meta: EventMeta, r: ResponseAssessed) -> None:
    if r.timepoint in clinical.LONG_TERM_TIMEPOINTS and not (subject and subject.in_long_term_follow_up):
        raise RuleViolation(
            f"{r.timepoint} is a long-term follow-up assessment (months 6, 9 and 12, for subjects in remission at "
            f"week 12), and {meta.subject_id} is not in long-term follow-up; record it as UNSCHEDULED."
        )
    if r.timepoint != "UNSCHEDULED" and subject and r.timepoint in subject.assessed_timepoints:
        raise RuleViolation(
            f"The {r.timepoint} response of {meta.subject_id} is already recorded; "
            "use UNSCHEDULED for an extra assessment."
        )


def _with_mrd_status(r: ResponseAssessed, c: ResponseCriteria) -> ResponseAssessed:
    """MRD negativity follows from the MRD value and the protocol's threshold when only the value is given."""
    if r.mrd_pct is None or r.mrd_negative is not None:
        return r
    return r.model_copy(update={"mrd_negative": r.mrd_pct < c.mrd_negative_below_pct})


def _check_response_criteria(r: ResponseAssessed, protocol: Protocol) -> None:
    c = protocol.response
    problems = []
    if clinical.in_remission(r.response):
        if r.marrow_blasts_pct >= c.cr_max_marrow_blasts_pct:
            problems.append(f"marrow blasts must be < {c.cr_max_marrow_blasts_pct}% (got {r.marrow_blasts_pct}%)")
        if r.circulating_blasts:
            problems.append("there must be no circulating blasts")
        if r.extramedullary_disease:
            problems.append("there must be no extramedullary disease")
        counts_low = [
            name
            for name, value, least in (
                ("ANC", r.anc_10e9_per_l, c.cr_min_anc_10e9_per_l),
                ("platelets", r.platelets_10e9_per_l, c.cr_min_platelets_10e9_per_l),
            )
            if value is not None and value < least
        ]
        if r.response == "CR" and counts_low:
            problems.append(
                f"{' and '.join(counts_low)} below the CR thresholds (ANC >= "
                f"{c.cr_min_anc_10e9_per_l}, platelets >= {c.cr_min_platelets_10e9_per_l} x10^9/L): "
                "this is a CRi"
            )
        both_given = r.anc_10e9_per_l is not None and r.platelets_10e9_per_l is not None
        if r.response == "CRi" and both_given and not counts_low:
            problems.append("ANC and platelets both meet the CR thresholds: this is a CR")
    if (
        r.response == "RELAPSE"
        and r.marrow_blasts_pct < c.relapse_min_marrow_blasts_pct
        and not r.extramedullary_disease
    ):
        problems.append(
            f"a relapse needs marrow blasts >= {c.relapse_min_marrow_blasts_pct}% or extramedullary disease"
        )
    if r.mrd_pct is not None and r.mrd_negative is not None:
        below = r.mrd_pct < c.mrd_negative_below_pct
        if r.mrd_negative != below:
            problems.append(
                f"mrd_negative is {str(r.mrd_negative).lower()} but mrd_pct {r.mrd_pct}% is "
                f"{'' if below else 'not '}below the protocol's {c.mrd_negative_below_pct}% "
                "(leave mrd_negative out: it follows from mrd_pct)"
            )
    if problems:
        raise InvalidCommand(f"{r.response} at {r.timepoint}: " + "; ".join(problems) + ".")


def _check_disease_course(
    subject: FollowupSubject | None, meta: EventMeta, r: ResponseAssessed, c: ResponseCriteria
) -> None:
    """A relapse comes after a remission; progressive disease is for a subject never in remission, and
    shows against the previous assessment. Both persist: a later assessment may record them again."""
    remission = subject.remission_before(meta.occurred_at) if subject else None
    if r.response == "RELAPSE" and remission is None:
        raise RuleViolation(
            f"A relapse follows a CR or CRi, and {meta.subject_id} has never been in remission on record; "
            "record PD (progressive disease) or NR (no response) for disease that never remitted."
        )
    if r.response != "PD":
        return
    if remission:
        raise RuleViolation(
            f"{meta.subject_id} was in remission (from {remission}): disease coming back after a remission is a "
            "relapse; record RELAPSE."
        )
    previous = subject.previous_assessment(meta.occurred_at) if subject else None
    if previous is None:
        if not r.extramedullary_disease:
            raise RuleViolation(
                f"PD needs a rise in blasts over the previous assessment, and {meta.subject_id} has none on record "
                "before this one: only new extramedullary disease shows progression here. Record NR otherwise."
            )
    elif not _progressed(previous.result, r, c.pd_min_blast_increase_pct):
        raise RuleViolation(
            f"PD needs a rise of at least {c.pd_min_blast_increase_pct}% in marrow or circulating blasts over the "
            f"previous assessment, or new extramedullary disease: on {previous.at.date()} {_blasts(previous.result)}, "
            f"now {_blasts(r)}. Record NR if the disease has not progressed."
        )


def _progressed(previous: ResponseAssessed, now: ResponseAssessed, min_increase_pct: float) -> bool:
    blasts = [(previous.marrow_blasts_pct, now.marrow_blasts_pct)]
    if previous.circulating_blasts_pct is not None and now.circulating_blasts_pct is not None:
        blasts.append((previous.circulating_blasts_pct, now.circulating_blasts_pct))
    new_extramedullary = now.extramedullary_disease is True and previous.extramedullary_disease is not True
    return new_extramedullary or any(clinical.blasts_rose(before, after, min_increase_pct) for before, after in blasts)


def _blasts(r: ResponseAssessed) -> str:
    circulating = "" if r.circulating_blasts_pct is None else f", circulating {r.circulating_blasts_pct}%"
    return f"marrow blasts {r.marrow_blasts_pct}%{circulating}"


# --- visits, persistence, subsequent therapy ----------------------------------------------------


def _check_visit(
    subject: FollowupSubject | None, meta: EventMeta, code: str, protocol: Protocol, kind: str | None = None
) -> None:
    """A visit of the protocol's schedule (of `kind`, if given), completed once."""
    valid = [v.code for v in protocol.followup.visits if kind is None or v.kind == kind]
    if code not in valid:
        of_kind = f"a {kind} contact " if kind else ""
        raise InvalidCommand(
            f"Visit code {code} is not {of_kind}in protocol {protocol.version}; valid codes: {', '.join(valid)}."
        )
    if subject and code in subject.visits_completed:
        raise RuleViolation(
            f"Visit {code} of {meta.subject_id} was already completed on {subject.visits_completed[code]}."
        )


def complete_visit(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: VisitCompleted,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    _check_visit(subject, meta, payload.visit_code, protocol)
    _require_followed(subject, meta, facts, "Visits")
    return FollowupSubject.record_into(subject, meta, payload)


def record_persistence(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: PersistenceSampled,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    if payload.visit_code:
        _check_visit(subject, meta, payload.visit_code, protocol)
    _require_followed(subject, meta, facts, "Persistence samples")
    return FollowupSubject.record_into(subject, meta, payload)


def start_subsequent_therapy(
    subject: FollowupSubject | None, meta: EventMeta, payload: SubsequentTherapyStarted, facts: SubjectFacts | None
) -> FollowupSubject:
    _require_followed(subject, meta, facts, "Subsequent therapies", after_leaving=True)
    return FollowupSubject.record_into(subject, meta, payload)


# --- survival status ----------------------------------------------------------------------------


def record_survival_status(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: SurvivalStatusRecorded,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    """Collected from the infusion to week 24 (month 12 in long-term follow-up), also after the main follow-up
    ended or the subject was lost: a survival sweep may find them."""
    what = "Survival-status contacts"
    known, infused_on = _require_infused(meta, facts, what)
    _check_survival_window(subject, meta, infused_on, protocol)
    if payload.status == "dead":
        return _record_death_news(subject, meta, payload, known)
    _not_after_death(subject, meta, what)
    _not_after_withdrawal(meta, known, what)
    if payload.visit_code:
        _check_visit(subject, meta, payload.visit_code, protocol, kind="survival")
    return FollowupSubject.record_into(subject, meta, payload)


def _check_survival_window(
    subject: FollowupSubject | None, meta: EventMeta, infused_on: date, protocol: Protocol
) -> None:
    fu = protocol.followup
    in_ltfu = bool(subject and subject.in_long_term_follow_up)
    study_day = (meta.occurred_at.date() - infused_on).days
    if study_day > (fu.long_term_end_day if in_ltfu else fu.survival_end_day):
        not_in = "" if in_ltfu else f", which {meta.subject_id} is not in"
        raise RuleViolation(
            f"Survival status is collected to study day {fu.survival_end_day} (week 24), and to day "
            f"{fu.long_term_end_day} in long-term follow-up{not_in}; this contact is on day {study_day}. "
            "Check the date; a death learned later is recorded as a death."
        )


def _record_death_news(
    subject: FollowupSubject | None, meta: EventMeta, payload: SurvivalStatusRecorded, facts: SubjectFacts
) -> FollowupSubject:
    """The contact, and the death it brings news of unless that is already recorded."""
    assert payload.died_on is not None and payload.primary_cause is not None  # guaranteed by the model
    contact_on = meta.occurred_at.date()
    if payload.died_on > contact_on:
        raise InvalidCommand(
            f"died_on ({payload.died_on}) is after the contact ({contact_on}): the news of a death comes on or "
            "after it. Correct died_on or the date of the contact."
        )
    recorded = subject.died_on if subject else None
    if recorded and recorded != payload.died_on:
        raise RuleViolation(
            f"The death of {meta.subject_id} is recorded on {recorded}, and this contact gives {payload.died_on}: "
            "correct the recorded death first, or died_on."
        )
    subject = FollowupSubject.record_into(subject, meta, payload)
    if recorded:
        return subject
    # The death itself: on its own date (at the contact's time of day), entered by the person who learned it.
    died_at = datetime.combine(payload.died_on, meta.occurred_at.timetz())
    death_meta = _derived_meta(meta, recorded_by=meta.recorded_by, occurred_at=died_at)
    return record_death(subject, death_meta, SubjectDied(primary_cause=payload.primary_cause), facts)


# --- leaving the study --------------------------------------------------------------------------


def _require_on_study(subject: FollowupSubject | None, meta: EventMeta) -> None:
    left = subject.off_study if subject else None
    if left:
        raise RuleViolation(f"Subject {meta.subject_id} {left[0]} on {left[1]}: no longer on study.")


def lose_to_follow_up(
    subject: FollowupSubject | None, meta: EventMeta, payload: LostToFollowUp, facts: SubjectFacts | None
) -> FollowupSubject:
    facts = _require_enrolled(meta, facts)
    _require_on_study(subject, meta)
    if facts.withdrawn_on:
        raise RuleViolation(
            f"{meta.subject_id} withdrew consent on {facts.withdrawn_on}: a withdrawn subject is off study, not lost "
            "to follow-up."
        )
    # What the site already recorded shows contact: the declaration and the last contact come after it.
    latest = _not_before_recorded_data(subject, meta, facts, "The loss to follow-up")
    if latest and payload.last_contact_on < latest:
        raise InvalidCommand(
            f"last_contact_on ({payload.last_contact_on}) is before data already recorded for {meta.subject_id} "
            f"(on {latest}): the last contact was on that day or later; correct last_contact_on."
        )
    if payload.last_contact_on > meta.occurred_at.date():
        raise InvalidCommand(
            f"last_contact_on ({payload.last_contact_on}) is after the date the subject is "
            f"declared lost ({meta.occurred_at.date()})."
        )
    return FollowupSubject.record_into(subject, meta, payload)


def complete_study(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: StudyCompleted,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    known, infused_on = _require_followed(subject, meta, facts, "Study completion")
    _require_on_study(subject, meta)
    fu, day = protocol.followup, (meta.occurred_at.date() - infused_on).days
    in_ltfu = bool(subject and subject.in_long_term_follow_up)
    if payload.completed == "long_term_follow_up":
        if not in_ltfu:
            raise RuleViolation(
                f"{meta.subject_id} is not in long-term follow-up (not in remission at week 12); "
                "record completion of the main follow-up instead."
            )
        if day < fu.long_term_end_day:
            raise RuleViolation(f"Long-term follow-up runs to day {fu.long_term_end_day}; this is day {day}.")
    else:
        if in_ltfu:
            raise RuleViolation(
                f"{meta.subject_id} is in long-term follow-up, which ends at day {fu.long_term_end_day}."
            )
        if day < fu.main_followup_end_day:
            raise RuleViolation(
                f"The main follow-up runs to day {fu.main_followup_end_day} (week 12); this is day {day}."
            )
        if not (subject and "W12" in subject.assessed_timepoints) and not (meta.reason or "").strip():
            raise RuleViolation(
                f"{meta.subject_id} has no week-12 response assessment: record it first, or complete the main "
                "follow-up with a reason saying why it was not done."
            )
    _not_before_recorded_data(subject, meta, known, "The completion")
    return FollowupSubject.record_into(subject, meta, payload)


def record_death(
    subject: FollowupSubject | None, meta: EventMeta, payload: SubjectDied, facts: SubjectFacts | None
) -> FollowupSubject:
    facts = _require_enrolled(meta, facts)
    day = meta.occurred_at.date()
    if subject and subject.died_on:
        raise RuleViolation(f"The death of {meta.subject_id} is already recorded ({subject.died_on}).")
    if facts.enrolled_on and day < facts.enrolled_on:  # (known: enrolled)
        raise InvalidCommand(f"The date of death {day} is before enrolment ({facts.enrolled_on}); check the date.")
    if subject and subject.last_record_on and day < subject.last_record_on:
        raise InvalidCommand(
            f"The date of death {day} is before follow-up data already recorded for "
            f"{meta.subject_id} (on {subject.last_record_on}); check the date."
        )
    return FollowupSubject.record_into(subject, meta, payload)


# The service's commands: the route under /subjects/{subject_id}/, the rule, the action the access policy
# knows it as, and a summary.
COMMANDS = (
    Command("adverse-events", report_ae, Action.REPORT_AE, "Report an adverse event"),
    Command("adverse-event-updates", update_ae, Action.REPORT_AE, "Update an AE's grade or outcome"),
    Command("adverse-event-corrections", correct_ae, Action.CORRECT, "Correct an AE report (reason required)"),
    Command("query-answers", answer_query, Action.ANSWER_QUERY, "Answer a data query"),
    Command("query-closures", close_query, Action.CLOSE_QUERY, "Close an answered data query"),
    Command(
        "safety-reports",
        submit_safety_report,
        Action.SUBMIT_SAFETY_REPORT,
        "Record an expedited safety report (SAE to sponsor, SUSAR to regulator)",
    ),
    Command("response-assessments", assess_response, Action.RECORD, "Record a response assessment"),
    Command("persistence-samples", record_persistence, Action.RECORD, "Record a CAR-T persistence sample"),
    Command("visits", complete_visit, Action.RECORD, "Record a completed visit"),
    Command(
        "subsequent-therapies",
        start_subsequent_therapy,
        Action.RECORD,
        "Record the start of a subsequent therapy (e.g. allo-HSCT)",
    ),
    Command(
        "survival-status",
        record_survival_status,
        Action.RECORD,
        "Record a survival-status contact (alive on a date, or the news of a death)",
    ),
    Command("lost-to-follow-up", lose_to_follow_up, Action.RECORD, "Declare the subject lost to follow-up"),
    Command("study-completion", complete_study, Action.RECORD, "Record that the subject completed the study"),
    Command("death", record_death, Action.RECORD, "Record the death of a subject"),
)
