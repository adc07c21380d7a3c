"""What follow-up learns from Kafka: enrolments, lymphodepletion and infusions (its rules), and every event of every
service for the journey projection."""

from __future__ import annotations

from services.followup.projections.store import JOURNEY
from shared import facts

READ_MODELS = (facts.read_model("followup", sources=("enrollment", "treatment")), JOURNEY)
