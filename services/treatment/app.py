"""Treatment use cases (synchronous: run them in a worker thread)."""

from __future__ import annotations

from shared.contract.envelope import Envelope
from shared.contract.events import InfusionCorrected, LymphodepletionGiven, UCARTInfused
from shared.eventstore import EventMeta, SubjectApplication
from shared.facts import SubjectFacts
from shared.protocol import Protocol

from services.treatment import domain


class TreatmentApplication(SubjectApplication[domain.TreatmentSubject]):
    name = "treatment"
    source = "treatment"

    def give_lymphodepletion(self, meta: EventMeta, payload: LymphodepletionGiven, facts: SubjectFacts | None,
                             protocol: Protocol) -> list[Envelope]:
        return self.record(domain.give_lymphodepletion, meta, payload, facts, protocol)

    def infuse(self, meta: EventMeta, payload: UCARTInfused, facts: SubjectFacts | None,
               protocol: Protocol) -> list[Envelope]:
        return self.record(domain.infuse, meta, payload, facts, protocol)

    def correct_infusion(self, meta: EventMeta, payload: InfusionCorrected, facts: SubjectFacts | None,
                         protocol: Protocol) -> list[Envelope]:
        return self.record(domain.correct_infusion, meta, payload, facts, protocol)
