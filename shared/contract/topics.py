"""Kafka topic names. One topic per source service; the message key is the subject id."""

from typing import Literal, get_args

Source = Literal["enrollment", "treatment", "followup"]  # the services, each the source of one topic

SOURCES: tuple[Source, ...] = get_args(Source)


def source_named(name: str) -> Source:
    """A source as read back from a database column (plain text there), checked."""
    for source in SOURCES:
        if name == source:
            return source
    raise ValueError(f"unknown source {name!r}; expected one of {', '.join(SOURCES)}")


def topic_for(source: Source, prefix: str = "") -> str:
    """`ucart.<source>.events`, optionally namespaced (e.g. one prefix per test or environment)."""
    return f"{prefix}ucart.{source}.events"


def checkpoint_topic(source: Source, prefix: str = "") -> str:
    """`ucart.<source>.checkpoints`: the service's signed checkpoints of its chain heads, kept for auditors."""
    return f"{prefix}ucart.{source}.checkpoints"


def dead_letter_topic(consumer: str, prefix: str = "") -> str:
    """Where a consumer parks messages it can never process, with the reason in the headers."""
    return f"{prefix}ucart.{consumer}.dead-letter"
