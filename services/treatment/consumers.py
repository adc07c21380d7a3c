"""What treatment learns from Kafka: enrolments, screening failures, withdrawals and deaths."""

from __future__ import annotations

from shared import facts

READ_MODELS = (facts.read_model("treatment", sources=("enrollment", "followup")),)
