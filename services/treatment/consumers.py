"""What treatment learns from Kafka: enrolments, screening failures, withdrawals and deaths."""

from __future__ import annotations

from shared.facts import SubjectFactsProjection
from shared.protocol import Protocol
from shared.service import Subscription


def subscriptions(protocol: Protocol) -> list[Subscription]:
    return [Subscription(SubjectFactsProjection("treatment"), sources=("enrollment", "followup"))]
