"""Follow-up use cases (synchronous: run them in a worker thread)."""

from __future__ import annotations

from shared.contract.envelope import Envelope
from shared.contract.events import (
    AECorrected,
    AEReported,
    AEUpdated,
    DataQueryAnswered,
    DataQueryClosed,
    LostToFollowUp,
    PersistenceSampled,
    ResponseAssessed,
    SafetyReportSubmitted,
    StudyCompleted,
    SubjectDied,
    SubsequentTherapyStarted,
    VisitCompleted,
)
from shared.eventstore import EventMeta, SubjectApplication
from shared.facts import SubjectFacts
from shared.protocol import Protocol

from services.followup import domain


class FollowupApplication(SubjectApplication[domain.FollowupSubject]):
    name = "followup"
    source = "followup"

    def report_ae(self, meta: EventMeta, payload: AEReported, facts: SubjectFacts | None,
                  protocol: Protocol) -> list[Envelope]:
        return self.record(domain.report_ae, meta, payload, facts, protocol)

    def update_ae(self, meta: EventMeta, payload: AEUpdated) -> list[Envelope]:
        return self.record(domain.update_ae, meta, payload)

    def correct_ae(self, meta: EventMeta, payload: AECorrected, facts: SubjectFacts | None,
                   protocol: Protocol) -> list[Envelope]:
        return self.record(domain.correct_ae, meta, payload, facts, protocol)

    def answer_query(self, meta: EventMeta, payload: DataQueryAnswered) -> list[Envelope]:
        return self.record(domain.answer_query, meta, payload)

    def close_query(self, meta: EventMeta, payload: DataQueryClosed) -> list[Envelope]:
        return self.record(domain.close_query, meta, payload)

    def submit_safety_report(self, meta: EventMeta, payload: SafetyReportSubmitted) -> list[Envelope]:
        return self.record(domain.submit_safety_report, meta, payload)

    def assess_response(self, meta: EventMeta, payload: ResponseAssessed, facts: SubjectFacts | None,
                        protocol: Protocol) -> list[Envelope]:
        return self.record(domain.assess_response, meta, payload, facts, protocol)

    def record_persistence(self, meta: EventMeta, payload: PersistenceSampled, facts: SubjectFacts | None,
                           protocol: Protocol) -> list[Envelope]:
        return self.record(domain.record_persistence, meta, payload, facts, protocol)

    def complete_visit(self, meta: EventMeta, payload: VisitCompleted, facts: SubjectFacts | None,
                       protocol: Protocol) -> list[Envelope]:
        return self.record(domain.complete_visit, meta, payload, facts, protocol)

    def start_subsequent_therapy(self, meta: EventMeta, payload: SubsequentTherapyStarted,
                                 facts: SubjectFacts | None) -> list[Envelope]:
        return self.record(domain.start_subsequent_therapy, meta, payload, facts)

    def lose_to_follow_up(self, meta: EventMeta, payload: LostToFollowUp, facts: SubjectFacts | None) -> list[Envelope]:
        return self.record(domain.lose_to_follow_up, meta, payload, facts)

    def complete_study(self, meta: EventMeta, payload: StudyCompleted, facts: SubjectFacts | None,
                       protocol: Protocol) -> list[Envelope]:
        return self.record(domain.complete_study, meta, payload, facts, protocol)

    def record_death(self, meta: EventMeta, payload: SubjectDied, facts: SubjectFacts | None) -> list[Envelope]:
        return self.record(domain.record_death, meta, payload, facts)
