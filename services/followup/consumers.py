"""What follow-up learns from Kafka: enrolments and infusions (its rules), and every event of every
service for the journey projection."""

from __future__ import annotations

from shared.facts import SubjectFactsProjection
from shared.protocol import Protocol
from shared.service import Subscription

from services.followup.projections.store import JourneyProjection


def subscriptions(protocol: Protocol) -> list[Subscription]:
    return [
        Subscription(SubjectFactsProjection("followup"), sources=("enrollment", "treatment")),
        Subscription(JourneyProjection("followup"), sources=("enrollment", "treatment", "followup")),
    ]
