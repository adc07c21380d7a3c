"""Subjects' journeys as sequences of commands, from the demo cohort (`infra.seed`), under new subject ids.

Both the HTTP workloads and the bulk generator walk these: a command's body depends on what earlier
commands recorded (an AE update names the AE's generated id, a query answer the query's id), which
`JourneyState` keeps from the events each answer carried.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from infra import seed

TEMPLATES = seed.cohort()  # 16 subjects at every stage of the study, both sites


@dataclass(frozen=True)
class Journey:
    subject_id: str
    site: str
    steps: list[seed.Step]


def journeys(prefix: str, start: int = 1) -> Iterator[Journey]:
    """Endless subjects `<prefix>-<site>-<n>`, cycling through the demo cohort's journeys."""
    n = start
    while True:
        template = TEMPLATES[n % len(TEMPLATES)]
        yield Journey(f"{prefix}-{template.site}-{n:06d}", template.site, template.steps)
        n += 1


@dataclass
class JourneyState:
    """What a subject's later commands need from the events recorded so far."""

    today: date
    aes: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (term, day) -> the stored AE
    query_id: str | None = None

    def body(self, step: seed.Step, site: str) -> dict[str, Any]:
        """The command's body, as `infra.seed` sends it."""
        at = seed.occurred_at(step.day, site, self.today)
        payload = dict(step.payload)
        if step.path == "enrolment":
            payload["consent_signed_on"] = (self.today + timedelta(days=step.day - 3)).isoformat()
        if step.path == "adverse-events":
            payload["aware_at"] = min(at + timedelta(hours=1), datetime.now(UTC)).isoformat()
        if step.ae:
            payload["ae_id"] = self.aes[step.ae]["ae_id"]
        if step.path == "safety-reports":
            payload["received_at"] = at.isoformat()
        if step.path in ("query-answers", "query-closures"):
            payload["query_id"] = self.query_id
        if step.path == "lost-to-follow-up":
            payload["last_contact_on"] = (self.today + timedelta(days=step.day - 15)).isoformat()
        return {"occurred_at": at.isoformat(), "reason": step.reason, "payload": payload}

    def learn(self, step: seed.Step, event_type: str, payload: dict[str, Any]) -> None:
        if event_type == "AEReported":
            self.aes[(payload["term"], step.day)] = payload
        if event_type == "DataQueryOpened":
            self.query_id = str(payload["query_id"])
