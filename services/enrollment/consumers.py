"""What enrollment learns from Kafka: deaths (no consent withdrawal after death) and the latest clinical
record of each subject (no withdrawal dated before it)."""

from __future__ import annotations

from shared import facts

READ_MODELS = (facts.read_model("enrollment", sources=("treatment", "followup")),)
