"""Enrollment use cases (synchronous: run them in a worker thread)."""

from __future__ import annotations

from shared.contract.envelope import Envelope
from shared.contract.events import ConsentWithdrawn, Enrolled, ScreenFailed
from shared.eventstore import EventMeta, SubjectApplication
from shared.facts import SubjectFacts
from shared.protocol import Protocol

from services.enrollment import domain


class EnrollmentApplication(SubjectApplication[domain.EnrollmentSubject]):
    name = "enrollment"
    source = "enrollment"

    def enrol(self, meta: EventMeta, payload: Enrolled, protocol: Protocol) -> list[Envelope]:
        return self.record(domain.enrol, meta, payload, protocol)

    def screen_fail(self, meta: EventMeta, payload: ScreenFailed) -> list[Envelope]:
        return self.record(domain.screen_fail, meta, payload)

    def withdraw(self, meta: EventMeta, payload: ConsentWithdrawn, facts: SubjectFacts | None) -> list[Envelope]:
        return self.record(domain.withdraw, meta, payload, facts)
