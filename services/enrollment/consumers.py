"""What enrollment learns from Kafka: deaths (no consent withdrawal after death)."""

from __future__ import annotations

from shared import facts

READ_MODELS = (facts.read_model("enrollment", sources=("followup",)),)
