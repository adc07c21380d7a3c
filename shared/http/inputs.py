"""Headers and query parameters: their limits, documented in OpenAPI and checked at the edge (422).

A header past a limit must be refused here, naming the header: the same value refused later by a
model of the contract (RecordedBy) would be a 500. Dates and times in a query are ISO 8601 only
(pydantic alone would read `?on=0` as 1970-01-01).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any
from uuid import UUID

from fastapi import Header
from pydantic import AwareDatetime

from shared.contract.strict import iso_date, iso_datetime

VISIBLE_ASCII = r"^[!-~]+$"  # no spaces, no control characters, nothing outside ASCII


class NeverNull:
    """An optional header or query parameter is absent or has a value, never null: document it so
    (FastAPI would say "string or null", and a client or a fuzzer would send the text "null")."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        schema: dict[str, Any] = handler(core_schema)
        values = [s for s in schema.pop("anyOf", []) if s != {"type": "null"}]
        if values:
            (value,) = values
            schema.update(value)
        return schema


# The limits of RecordedBy (shared/contract/envelope.py), which these headers fill.
UserId = Annotated[
    str,
    Header(
        min_length=1,
        max_length=128,
        pattern=VISIBLE_ASCII,
        description="Who is acting: 1 to 128 visible ASCII characters, no spaces.",
    ),
]
Role = Annotated[
    str,
    Header(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
        description="Their study role, e.g. coordinator: 1 to 64 letters, digits, _ or -, starting with a letter.",
    ),
]

CorrelationId = Annotated[
    UUID | None,
    NeverNull(),
    Header(description="Ties the events of one request together (a UUID; default: a new one)."),
]
CausationId = Annotated[UUID | None, NeverNull(), Header(description="The event that caused this command (a UUID).")]
IdempotencyKey = Annotated[
    str | None,
    NeverNull(),
    Header(
        min_length=8,
        max_length=200,
        pattern=VISIBLE_ASCII,
        description="Makes a retry safe: 8 to 200 visible ASCII characters, no spaces; one key per request.",
    ),
]

# Any year is a fair question for a read (statuses on 9999-12-31); only stored dates keep to the study's years.
QueryDate = Annotated[date | None, iso_date, NeverNull()]
QueryDatetime = Annotated[AwareDatetime | None, iso_datetime, NeverNull()]
