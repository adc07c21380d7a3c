"""A subject's CAR-T persistence chart: qPCR copies/ug DNA on a log scale and % CAR+ of CD3+ by flow,
against the study day. Pure geometry (no I/O, no markup): the template draws it as SVG, and a table
beside it carries the numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from services.followup.projections.journey import PersistenceSample

WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 70, 60, 16, 34  # margins: the qPCR axis left, the % CAR+ axis right


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str


@dataclass(frozen=True)
class Chart:
    qpcr: list[Point]
    car: list[Point]
    x_ticks: list[tuple[float, str]]
    qpcr_ticks: list[tuple[float, str]]  # y, label (decades)
    car_ticks: list[tuple[float, str]]  # y, label (%)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM


def chart(samples: list[PersistenceSample], infused_on: date | None) -> Chart | None:
    """None without an infusion or a sample (nothing to draw)."""
    if infused_on is None or not samples:
        return None
    days = [(s.sampled_on - infused_on).days for s in samples]
    last_day = max(28, *days)
    copies = [s.qpcr_copies_per_ug_dna for s in samples if s.qpcr_copies_per_ug_dna]
    high = max(1, math.ceil(math.log10(max(copies)))) if copies else 6
    top_pct = max(10.0, math.ceil(max((s.flow_car_pct_of_cd3 or 0) for s in samples) / 10) * 10)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(day: int) -> float:
        return LEFT + plot_w * day / last_day

    def y_log(value: float) -> float:  # 1 copy (or fewer) at the bottom, 10^high at the top
        return TOP + plot_h * (1 - min(max(math.log10(max(value, 1)) / high, 0), 1))

    def y_pct(value: float) -> float:
        return TOP + plot_h * (1 - value / top_pct)

    qpcr, car = [], []
    for sample, day in zip(samples, days, strict=True):
        where = f"day {day} ({sample.sampled_on}{', ' + sample.visit_code if sample.visit_code else ''})"
        if sample.qpcr_copies_per_ug_dna is not None:
            qpcr.append(
                Point(
                    x(day),
                    y_log(sample.qpcr_copies_per_ug_dna),
                    f"{sample.qpcr_copies_per_ug_dna:,.0f} copies/ug DNA, {where}",
                )
            )
        if sample.flow_car_pct_of_cd3 is not None:
            car.append(
                Point(
                    x(day), y_pct(sample.flow_car_pct_of_cd3), f"{sample.flow_car_pct_of_cd3:g} % CAR+ of CD3+, {where}"
                )
            )
    step = 7 if last_day <= 56 else 28
    x_ticks = [(x(d), str(d)) for d in range(0, last_day + 1, step)]
    qpcr_ticks = [(y_log(10**k), f"10^{k}" if k else "1") for k in range(0, high + 1)]
    car_ticks = [(y_pct(p), f"{p:g} %") for p in (0, top_pct / 2, top_pct)]
    return Chart(qpcr, car, x_ticks, qpcr_ticks, car_ticks)
