"""What enrollment learns from Kafka: deaths (no consent withdrawal after death)."""

from __future__ import annotations

from shared.facts import SubjectFactsProjection
from shared.protocol import Protocol
from shared.service import Subscription


def subscriptions(protocol: Protocol) -> list[Subscription]:
    return [Subscription(SubjectFactsProjection("enrollment"), sources=("followup",))]
