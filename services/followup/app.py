"""Follow-up use cases (synchronous: run them in a worker thread)."""

from __future__ import annotations

from shared.contract.envelope import Envelope
from shared.contract.events import AEReported, ResponseAssessed, SubjectDied, VisitCompleted
from shared.eventstore import EventMeta, SubjectApplication
from shared.facts import SubjectFacts
from shared.protocol import Protocol

from services.followup import domain


class FollowupApplication(SubjectApplication[domain.FollowupSubject]):
    name = "followup"
    source = "followup"

    def report_ae(self, meta: EventMeta, payload: AEReported, facts: SubjectFacts | None) -> list[Envelope]:
        return self.commit(domain.report_ae(self.find(meta.subject_id), meta, payload, facts))

    def assess_response(self, meta: EventMeta, payload: ResponseAssessed, facts: SubjectFacts | None) -> list[Envelope]:
        return self.commit(domain.assess_response(self.find(meta.subject_id), meta, payload, facts))

    def complete_visit(
        self, meta: EventMeta, payload: VisitCompleted, facts: SubjectFacts | None, protocol: Protocol
    ) -> list[Envelope]:
        return self.commit(domain.complete_visit(self.find(meta.subject_id), meta, payload, facts, protocol))

    def record_death(self, meta: EventMeta, payload: SubjectDied, facts: SubjectFacts | None) -> list[Envelope]:
        return self.commit(domain.record_death(self.find(meta.subject_id), meta, payload, facts))
