"""Kaplan-Meier curves as drawing geometry: the step curve, its confidence band and its censoring ticks.

Pure geometry (no I/O, no markup): the study page's template draws it as SVG. The numbers come from the
study tables' `KaplanMeier` (Greenwood variance, log-log confidence interval), never recomputed here.
The x axis runs in study days from 0 to `last_day` (week 24 by default) and is labelled in weeks; the y
axis is survival from 0 to 100 %. A curve that goes on after `last_day` is cut there.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.followup.study.survival import KaplanMeier

WIDTH, HEIGHT = 640, 300  # drawing units (the SVG scales to the page)
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 12, 40  # room for the axis labels
LAST_DAY = 168  # week 24
TICK = 7  # half the height of a censoring tick

Point = tuple[float, float]


@dataclass(frozen=True)
class Curve:
    label: str
    kind: str  # css class of the curve
    steps: list[Point]  # the step curve's corners, left to right
    band: list[Point]  # the confidence band's outline: the upper bound left to right, the lower back
    ticks: list[Point]  # one per time with a censored subject, on the curve

    @property
    def path(self) -> str:
        return _path(self.steps)

    @property
    def band_path(self) -> str:
        return _path(self.band) + " Z" if self.band else ""


@dataclass(frozen=True)
class Chart:
    curves: list[Curve]
    x_ticks: list[tuple[float, str]]  # x, label (weeks)
    y_ticks: list[tuple[float, str]]  # y, label (%)
    last_day: int
    width: int = WIDTH
    height: int = HEIGHT

    @property
    def plot(self) -> tuple[float, float, float, float]:
        """left, top, right, bottom of the plotting area"""
        return LEFT, TOP, self.width - RIGHT, self.height - BOTTOM

    def x(self, day: float) -> float:
        return x_of(day, self.last_day)

    def y(self, survival: float) -> float:
        return y_of(survival)


def x_of(day: float, last_day: int = LAST_DAY) -> float:
    return round(LEFT + (WIDTH - LEFT - RIGHT) * min(max(day, 0.0), last_day) / last_day, 2)


def y_of(survival: float) -> float:
    return round(TOP + (HEIGHT - TOP - BOTTOM) * (1.0 - min(max(survival, 0.0), 1.0)), 2)


def _path(points: list[Point]) -> str:
    return " ".join(f"{'M' if i == 0 else 'L'}{x:g},{y:g}" for i, (x, y) in enumerate(points))


def _steps(times: list[float], values: list[float], last_day: int) -> list[Point]:
    """The corners of a right-continuous step function through (times[i], values[i]), cut at last_day."""
    points = [(x_of(times[0], last_day), y_of(values[0]))]
    for i in range(1, len(times)):
        if times[i] > last_day:
            points.append((x_of(last_day, last_day), y_of(values[i - 1])))
            return points
        x = x_of(times[i], last_day)
        points.append((x, y_of(values[i - 1])))
        if values[i] != values[i - 1]:
            points.append((x, y_of(values[i])))
    return points


def curve(km: KaplanMeier | None, label: str, kind: str, last_day: int = LAST_DAY) -> Curve:
    """One endpoint's curve: S(t) as steps at the event times, the band between the CI bounds, a tick at
    each censored time. No subjects (e.g. DOR without a responder): nothing to draw."""
    if km is None:
        return Curve(label, kind, [], [], [])
    times = list(km.times)
    upper = _steps(times, list(km.ci_upper), last_day)
    lower = _steps(times, list(km.ci_lower), last_day)
    ticks = [
        (x_of(t, last_day), y_of(s))
        for t, s, c in zip(km.times, km.survival, km.censored, strict=True)
        if c and t <= last_day
    ]
    return Curve(label, kind, _steps(times, list(km.survival), last_day), upper + lower[::-1], ticks)


def chart(curves: list[Curve], last_day: int = LAST_DAY) -> Chart:
    weeks = range(0, last_day // 7 + 1, 4)
    x_ticks = [(x_of(7 * w, last_day), str(w)) for w in weeks]
    y_ticks = [(y_of(p / 100), f"{p} %") for p in (0, 25, 50, 75, 100)]
    return Chart(curves, x_ticks, y_ticks, last_day)
