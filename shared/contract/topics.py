"""Kafka topic names. One topic per source service; the message key is the subject id."""

from typing import get_args

from shared.contract.envelope import Source

SOURCES: tuple[Source, ...] = get_args(Source)


def topic_for(source: Source, prefix: str = "") -> str:
    """`ucart.<source>.events`, optionally namespaced (e.g. one prefix per test or environment)."""
    return f"{prefix}ucart.{source}.events"


def dead_letter_topic(consumer: str, prefix: str = "") -> str:
    """Where a consumer parks messages it can never process, with the reason in the headers."""
    return f"{prefix}ucart.{consumer}.dead-letter"
