"""Subjects' journeys as sequences of commands, from the demo cohort (`infra.seed`), under new subject ids.

Both the HTTP workloads and the bulk generator walk these: a command's body depends on what earlier
commands recorded (an AE update names the AE's generated id, a query answer the query's id), which
`infra.seed.Entry` keeps from the events each answer carried.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from infra import seed
from shared.protocol import load_protocol
from shared.time import today_in

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


def entry(journey: Journey, today: date | None = None) -> seed.Entry:
    """A fresh entry of the journey's commands, dated from `today` (default: today at its site)."""
    zone = load_protocol().zone(journey.site)
    return seed.Entry(zone, today or today_in(zone))
