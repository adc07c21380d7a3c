"""Strict values for the contract's models: what a client sends is taken as sent, or refused.

- Types are strict where a lax reading would guess: the string "1980" is not an int, 1 and "yes" are
  not booleans, a number is not a date (pydantic would read 0 as 1970-01-01).
- Numbers a client sends are finite: no Infinity, NaN or 1e999.
- Dates a client sends lie between 1900 and 2100 (further out, date arithmetic overflows).
- Text a client sends holds no NUL (PostgreSQL cannot store it) and no control characters, except
  line breaks and tabs in free text. (Pydantic itself refuses lone surrogates, which UTF-8 cannot hold.)

None of this changes a model's JSON Schema, so published schemas keep their fingerprints. Stored
events pass the type rules: they were written from these models (``model_dump(mode="json")``); a
model-wide ``strict=True`` is avoided because it would refuse the ISO strings dates are stored as.
The finiteness, text and year rules apply only to what a client sends (a `ClientInput`): an event
stored before them (a NUL in a term, an Infinity in a count) must still load, or the relay, the
aggregates and the rebuilds would stop at it.
"""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from datetime import date
from typing import Annotated, Any, ClassVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

# Unicode's control characters (C0, DEL, C1); free text may also hold tab, line feed and carriage return.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_IN_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def check_text(value: str, *, free_text: bool = False) -> str:
    """`value`, or ValueError naming the first character that may not be stored."""
    found = (_CONTROL_IN_FREE_TEXT if free_text else _CONTROL).search(value)
    if found is None:
        return value
    char = f"U+{ord(found.group()):04X}"
    if found.group() == "\x00":
        raise ValueError(f"contains a NUL character ({char}), which cannot be stored; remove it")
    where = "" if free_text else " (line breaks and tabs are allowed only in free text such as a reason)"
    raise ValueError(f"contains the control character {char} at position {found.start()}; remove it{where}")


def _iso(pattern: str, example: str) -> BeforeValidator:
    """Accept a date or time only as ISO 8601 text (or as a Python value, from code)."""
    iso = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, int | float) or (isinstance(value, str) and not iso.fullmatch(value)):
            raise ValueError(f"give an ISO 8601 value such as {example}")
        return value

    return BeforeValidator(check)


ISO_DATE = r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
# The offset is optional here so that pydantic's own message asks for it.
ISO_DATETIME = ISO_DATE + r"[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})?"
iso_date = _iso(ISO_DATE, "2026-03-02")
iso_datetime = _iso(ISO_DATETIME, "2026-03-02T09:30:00+01:00")

IsoDate = Annotated[date, iso_date]
IsoAwareDatetime = Annotated[AwareDatetime, iso_datetime]

YEARS = (1900, 2100)  # as for a year of birth: no date of this study lies outside


def _check_year(value: date) -> date:
    """`value` (a date or a date-time), or ValueError if its year is out of YEARS."""
    if not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(
            f"{value.isoformat()} is not a date of this study (years {YEARS[0]} to {YEARS[1]}); check the year"
        )
    return value


# True while a ClientInput is validated, with every model inside it.
_CLIENT_INPUT: ContextVar[bool] = ContextVar("client_input", default=False)


class ContractModel(BaseModel):
    """Base of every model of the contract: frozen, no unknown fields, finite numbers, and clean text
    when a client sends it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Fields whose text may span lines (a reason, details); any other text is one line.
    free_text: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*")
    @classmethod
    def _client_input_rules(cls, value: Any, info: ValidationInfo) -> Any:
        if not _CLIENT_INPUT.get():
            return value
        if isinstance(value, str):
            check_text(value, free_text=info.field_name in cls.free_text)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number (not Infinity, NaN, or out of range such as 1e999)")
        if isinstance(value, date):  # and so a datetime
            _check_year(value)
        return value


class ClientInput(ContractModel):
    """What a client sends (a command's body): the text and year rules hold for it and every model inside
    it."""

    @model_validator(mode="wrap")
    @classmethod
    def _as_client_input(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        token = _CLIENT_INPUT.set(True)
        try:
            return handler(data)
        finally:
            _CLIENT_INPUT.reset(token)
