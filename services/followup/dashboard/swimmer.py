"""A subject's swimmer lane: where each thing of the journey falls on one time axis, in study days.

Pure geometry (no I/O, no markup): the template draws it as SVG. The axis runs from enrolment (negative
study days: lymphodepletion falls before the infusion, day 0) to the day the page is read, or the
subject's exit; one lane per kind of fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from services.followup.projections.journey import JourneyView
from services.followup.projections.schedule import ScheduledVisit

WIDTH = 960  # drawing units across the axis (the SVG scales to the page)
LEFT = 130  # room for the lane labels
LANE = 34  # height of a lane


@dataclass(frozen=True)
class Mark:
    x: float
    width: float  # 0: a point
    kind: str  # css class: ld, infusion, ae-g1 ... ae-g5, response, visit-done, visit-window, ...
    label: str  # the tooltip and the accessible name
    flag: str = ""  # a short marker drawn beside it (CRS, ICANS, DLT)


@dataclass(frozen=True)
class Lane:
    title: str
    y: float
    marks: list[Mark] = field(default_factory=list)


@dataclass(frozen=True)
class SwimmerLane:
    lanes: list[Lane]
    ticks: list[tuple[float, str]]  # x, study-day label
    height: float
    width: int = WIDTH + LEFT


def lane(journey: JourneyView, visits: list[ScheduledVisit], today: date, dlt_window_days: int) -> SwimmerLane:
    """The lanes of one subject as known on `today`."""
    anchor = journey.infused_on
    start = min(d for d in (journey.enrolled_on, *journey.lymphodepletion_days, today) if d is not None)
    end = min(d for d in (journey.died_on, journey.withdrawn_on, journey.lost_to_follow_up_on, today) if d)
    end = max(end, start)
    span = max((end - start).days, 1)

    def x(day: date) -> float:
        return LEFT + WIDTH * min(max((day - start).days, 0), span) / span

    def study_day(day: date) -> str:
        return f"day {(day - anchor).days}" if anchor else day.isoformat()

    treatment = [
        Mark(x(d), 0, "ld", f"lymphodepletion, {d.isoformat()} ({study_day(d)})") for d in journey.lymphodepletion_days
    ]
    if journey.infused_on:
        treatment.append(Mark(x(journey.infused_on), 0, "infusion", f"UCAR-T infusion, {journey.infused_on} (day 0)"))
    if anchor:
        window_end = min(date.fromordinal(anchor.toordinal() + dlt_window_days), end)
        treatment.insert(
            0, Mark(x(anchor), x(window_end) - x(anchor), "dlt-window", f"DLT window, days 0-{dlt_window_days}")
        )

    events = []
    for ae in journey.adverse_events:
        history = ae.grade_history
        for n, reached in enumerate(history):
            until = history[n + 1].reached_on if n + 1 < len(history) else end
            flag = ae.report.category if ae.report.category in ("CRS", "ICANS") else ""
            label = (
                f"{ae.report.term}, grade {reached.grade} from {reached.reached_on} ({study_day(reached.reached_on)})"
            )
            events.append(
                Mark(
                    x(reached.reached_on), max(x(until) - x(reached.reached_on), 3), f"ae-g{reached.grade}", label, flag
                )
            )
    if journey.had_dlt:
        events.append(Mark(x(anchor or start), 0, "dlt", "dose-limiting toxicity in the DLT window", "DLT"))

    responses = [
        Mark(
            x(r.assessed_on),
            0,
            f"response-{r.response.lower()}",
            f"{r.timepoint}: {r.response}, {r.assessed_on} ({study_day(r.assessed_on)})",
        )
        for r in journey.responses
    ]
    planned = []
    for v in visits:
        if v.status == "not_applicable" or v.window_start > end:
            continue
        left, right = x(v.window_start), x(min(v.window_end, end))
        planned.append(
            Mark(
                left,
                max(right - left, 2),
                f"visit-{v.status}",
                f"{v.code} ({v.kind}): {v.status.replace('_', ' ')}, window {v.window_start} to {v.window_end}",
            )
        )
    exits = [
        Mark(x(d), 0, "exit", f"{what}, {d}")
        for what, d in (
            ("died", journey.died_on),
            ("withdrew", journey.withdrawn_on),
            ("lost to follow-up", journey.lost_to_follow_up_on),
        )
        if d
    ]
    lanes = [
        Lane("Treatment", 20, treatment + exits),
        Lane("Adverse events", 20 + LANE, events),
        Lane("Responses", 20 + 2 * LANE, responses),
        Lane("Visits", 20 + 3 * LANE, planned),
    ]
    step = max(7, (span // 8 // 7) * 7 or 7)
    first = start if anchor is None else anchor
    ticks = []
    for offset in range(-((first - start).days // step) * step, span + 1, step):
        day = date.fromordinal(first.toordinal() + offset)
        if start <= day <= end and x(day) <= LEFT + WIDTH - 24:  # a label at the very edge would be cut
            ticks.append((x(day), study_day(day)))
    return SwimmerLane(lanes, ticks, 20 + 4 * LANE + 24)
