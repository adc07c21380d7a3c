"""Follow-up: adverse events, data queries, safety reports, responses, persistence, visits and the
ways a subject leaves the study. Pure rules, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
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
    LongTermFollowUpStarted,
    LostToFollowUp,
    Payload,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    VisitCompleted,
)
from shared.errors import InvalidCommand, NotFound, RuleViolation, SubjectNotFound
from shared.eventstore import EventMeta, SubjectStream
from shared.facts import SubjectFacts
from shared.protocol import Protocol

# Events the rules raise themselves (a data query, the start of long-term follow-up) are attributed
# to the rules engine, caused by the event that triggered them.
RULES = RecordedBy(user_id="ucart-rules", role="system")


@dataclass
class AERecord:
    fields: AEFields
    onset_on: date
    grade: int
    reports: set[str] = field(default_factory=set)


class FollowupSubject(SubjectStream):
    def initialise(self) -> None:
        self.aes: dict[UUID, AERecord] = {}
        self.open_queries: dict[UUID, bool] = {}  # query id -> answered
        self.assessed_timepoints: set[str] = set()
        self.in_remission = False  # a CR/CRi not yet followed by relapse
        self.visits_completed: dict[str, date] = {}
        self.long_term_follow_up = False
        self.week12_remission = False
        self.died_on: date | None = None
        self.lost_on: date | None = None
        self.completed_on: date | None = None
        self.last_record_on: date | None = None  # clinical date of the latest record

    def when(self, meta: EventMeta, payload: Payload) -> None:
        day = meta.occurred_at.date()
        if not clinical.administrative(payload.event_type):  # queries and reports say nothing of the subject
            self.last_record_on = max(self.last_record_on or day, day)
        match payload:
            case AEReported():
                self.aes[payload.ae_id] = AERecord(payload, day, payload.grade)
            case AECorrected():
                self.aes[payload.ae_id] = AERecord(payload, day, payload.grade, self.aes[payload.ae_id].reports)
            case AEUpdated() if payload.grade is not None:
                self.aes[payload.ae_id].grade = payload.grade
            case SafetyReportSubmitted():
                self.aes[payload.ae_id].reports.add(payload.report)
            case DataQueryOpened():
                self.open_queries[payload.query_id] = False
            case DataQueryAnswered():
                self.open_queries[payload.query_id] = True
            case DataQueryClosed():
                self.open_queries.pop(payload.query_id, None)
            case ResponseAssessed():
                self.assessed_timepoints.add(payload.timepoint)
                if payload.timepoint == "W12":
                    self.week12_remission = clinical.in_remission(payload.response)
                if clinical.in_remission(payload.response):
                    self.in_remission = True
                elif payload.response == "RELAPSE":
                    self.in_remission = False
            case PersistenceSampled() if payload.visit_code:
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


def _require_infused(
    subject: FollowupSubject | None,
    meta: EventMeta,
    facts: SubjectFacts | None,
    what: str,
    *,
    after_withdrawal: bool = False,
) -> date:
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
    left = subject.off_study if subject else None
    if left and day > left[1] and not (after_withdrawal and left[0] != "died"):
        raise RuleViolation(f"{what}: {day} is after {meta.subject_id} {left[0]} ({left[1]}); check the date.")
    if not after_withdrawal and facts.withdrawn_on and day > facts.withdrawn_on:
        raise RuleViolation(
            f"{what}: {day} is after {meta.subject_id} withdrew consent ({facts.withdrawn_on}); "
            "no study procedures after withdrawal."
        )
    return facts.infused_on


def _rules_meta(cause: EventMeta) -> EventMeta:
    return cause.model_copy(
        update={"recorded_by": RULES, "causation_id": cause.event_id, "reason": None, "event_id": uuid4()}
    )


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


def _grade_query(
    subject: FollowupSubject, meta: EventMeta, ae_id: UUID, ae: AEFields, protocol: Protocol
) -> FollowupSubject:
    """Open a data query when the findings give another grade than the investigator's."""
    derived = derived_grade(ae.category, ae.crs, ae.icans, ae.gvhd, protocol.grading)
    if derived is None or derived == ae.grade:
        return subject
    scale = "MAGIC" if ae.category == "GVHD" else "ASTCT"
    query = DataQueryOpened(
        ae_id=ae_id,
        field="grade",
        recorded_value=str(ae.grade),
        expected_value=str(derived),
        text=f"The investigator's {ae.category} grade is {ae.grade}, but the recorded findings give grade "
        f"{derived} by {scale} ({protocol.version}). Please check the grade or the findings, and answer.",
    )
    return FollowupSubject.record_into(subject, _rules_meta(meta), query)


def report_ae(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: AEReported,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    _require_infused(subject, meta, facts, "Adverse events", after_withdrawal=True)  # safety reporting goes on
    _check_ae(meta, payload)
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
    ae = _known_ae(subject, meta, payload.ae_id)
    if meta.occurred_at.date() < ae.onset_on:
        raise InvalidCommand(f"The update is dated {meta.occurred_at.date()}, before the AE's onset ({ae.onset_on}).")
    return FollowupSubject.record_into(subject, meta, payload)


def correct_ae(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: AECorrected,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    _known_ae(subject, meta, payload.ae_id)
    _require_infused(subject, meta, facts, "Adverse events", after_withdrawal=True)  # the corrected onset
    if not (meta.reason or "").strip():
        raise InvalidCommand("A correction needs a reason: say why the earlier report was wrong.")
    _check_ae(meta, payload)
    subject = FollowupSubject.record_into(subject, meta, payload)
    return _grade_query(subject, meta, payload.ae_id, payload, protocol)


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
    if not subject.open_queries[payload.query_id]:
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


def assess_response(
    subject: FollowupSubject | None,
    meta: EventMeta,
    payload: ResponseAssessed,
    facts: SubjectFacts | None,
    protocol: Protocol,
) -> FollowupSubject:
    _require_infused(subject, meta, facts, "Response assessments")
    if payload.timepoint != "UNSCHEDULED" and subject and payload.timepoint in subject.assessed_timepoints:
        raise RuleViolation(
            f"The {payload.timepoint} response of {meta.subject_id} is already recorded; "
            "use UNSCHEDULED for an extra assessment."
        )
    _check_response_criteria(payload, protocol)
    if payload.response == "RELAPSE" and not (subject and subject.in_remission):
        raise RuleViolation(
            f"A relapse follows a CR or CRi, and {meta.subject_id} is not in remission on "
            "record; record NR for refractory disease."
        )
    subject = FollowupSubject.record_into(subject, meta, payload)
    if (
        payload.timepoint == "W12"
        and clinical.enters_long_term_follow_up(payload.response)
        and not subject.long_term_follow_up
    ):
        start = LongTermFollowUpStarted(week12_response=payload.response)
        subject = FollowupSubject.record_into(subject, _rules_meta(meta), start)
    return subject


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
    if (
        r.mrd_pct is not None
        and r.mrd_negative is not None
        and r.mrd_negative != (r.mrd_pct < c.mrd_negative_below_pct)
    ):
        problems.append(f"mrd_negative contradicts mrd_pct {r.mrd_pct}% (negative below {c.mrd_negative_below_pct}%)")
    if problems:
        raise InvalidCommand(f"{r.response} at {r.timepoint}: " + "; ".join(problems) + ".")


def _check_visit(subject: FollowupSubject | None, meta: EventMeta, code: str, protocol: Protocol) -> None:
    if code not in protocol.visit_codes:
        raise InvalidCommand(
            f"Visit code {code} is not in protocol {protocol.version}; "
            f"valid codes: {', '.join(v.code for v in protocol.followup.visits)}."
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
    _require_infused(subject, meta, facts, "Visits")
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
    _require_infused(subject, meta, facts, "Persistence samples")
    return FollowupSubject.record_into(subject, meta, payload)


def start_subsequent_therapy(
    subject: FollowupSubject | None, meta: EventMeta, payload: SubsequentTherapyStarted, facts: SubjectFacts | None
) -> FollowupSubject:
    _require_infused(subject, meta, facts, "Subsequent therapies", after_withdrawal=True)
    return FollowupSubject.record_into(subject, meta, payload)


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
    latest = max(d for d in (facts.enrolled_on, facts.infused_on, subject.last_record_on if subject else None) if d)
    if meta.occurred_at.date() < latest:
        raise InvalidCommand(
            f"The loss to follow-up is dated {meta.occurred_at.date()}, before data already recorded for "
            f"{meta.subject_id} (on {latest}); check the date."
        )
    if payload.last_contact_on < latest:
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
    infused_on = _require_infused(subject, meta, facts, "Study completion")
    _require_on_study(subject, meta)
    fu, day = protocol.followup, (meta.occurred_at.date() - infused_on).days
    # (a week-12 remission recorded before LongTermFollowUpStarted existed counts the same)
    in_ltfu = bool(subject and (subject.long_term_follow_up or subject.week12_remission))
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
    if subject and subject.last_record_on and meta.occurred_at.date() < subject.last_record_on:
        raise InvalidCommand(
            f"The completion is dated {meta.occurred_at.date()}, before data already recorded for {meta.subject_id} "
            f"(on {subject.last_record_on}); check the date."
        )
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
    Command("lost-to-follow-up", lose_to_follow_up, Action.RECORD, "Declare the subject lost to follow-up"),
    Command("study-completion", complete_study, Action.RECORD, "Record that the subject completed the study"),
    Command("death", record_death, Action.RECORD, "Record the death of a subject"),
)
