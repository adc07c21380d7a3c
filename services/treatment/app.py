"""Treatment use cases (synchronous: run them in a worker thread)."""

from __future__ import annotations

from shared.contract.envelope import Envelope
from shared.contract.events import LymphodepletionGiven, UCARTInfused
from shared.eventstore import EventMeta, SubjectApplication
from shared.facts import SubjectFacts
from shared.protocol import Protocol

from services.treatment import domain


class TreatmentApplication(SubjectApplication[domain.TreatmentSubject]):
    name = "treatment"
    source = "treatment"

    def give_lymphodepletion(
        self, meta: EventMeta, payload: LymphodepletionGiven, facts: SubjectFacts | None, protocol: Protocol
    ) -> list[Envelope]:
        subject = self.find(meta.subject_id)
        return self.commit(domain.give_lymphodepletion(subject, meta, payload, facts, protocol))

    def infuse(
        self, meta: EventMeta, payload: UCARTInfused, facts: SubjectFacts | None, protocol: Protocol
    ) -> list[Envelope]:
        return self.commit(domain.infuse(self.find(meta.subject_id), meta, payload, facts, protocol))
