"""The Study page: the study's tables as the read API computes them (`/study/efficacy`, `/study/safety`),
for the subjects the person may count (Action.STUDY_TABLES: the sponsor sees every site, an
investigator their own), with Kaplan-Meier curves, subjects by status and site, and a CRS/ICANS heat map
over the DLT window. No subject code is shown: the page holds aggregates only."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.followup.api import site_today, visible_journeys
from services.followup.dashboard import km
from services.followup.dashboard.pages import STATUSES, _page
from services.followup.dashboard.render import message, templates
from services.followup.projections import journey as journeys
from services.followup.study import efficacy as efficacy_tables
from services.followup.study import from_journeys as study
from services.followup.study import safety as safety_tables
from shared.access.policy import Action
from shared.http.identity import Permit
from shared.runtime import Rt, Runtime
from shared.time import today_utc

router = APIRouter(include_in_schema=False)

HEAT_CATEGORIES = ("CRS", "ICANS")
RESOLVED = ("recovered", "recovered_with_sequelae", "fatal")  # an AE with such an outcome has ended
NO_SITE = "—"
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class HeatMap:
    """The worst CRS and ICANS grade any subject had on each study day 0..last_day."""

    days: list[int]
    worst: dict[str, list[int | None]]  # category -> worst grade per day (0: none; None: no subject followed)
    followed: list[int]  # subjects followed on each day (infused, the day reached by the cut-off, on study)


def grade_on_day(ae: journeys.AdverseEvent, day: date, as_of: date) -> int:
    """The worst grade the AE had on `day` (0 if it had none): the grade it carried into the day and every
    grade reached that day, as known on `as_of`. An AE recovered (or fatal) on an earlier day has ended,
    unless a grade reached after that outcome shows it again."""
    if day > as_of or ae.onset_on > day:
        return 0
    history = ae.grade_history(min(day, as_of))
    ended = [u.on for u in ae.updates if u.outcome in RESOLVED and u.on < day and u.on <= as_of]
    if ended and not any(g.reached_on > max(ended) for g in history):
        return 0
    carried = [g.grade for g in history if g.reached_on < day][-1:]
    today = [g.grade for g in history if g.reached_on == day]
    return max(carried + today, default=0)


def heat_map(visible: list[journeys.Journey], as_of: date, last_day: int) -> HeatMap:
    """Over the safety population (infused by `as_of`) and their treatment-emergent CRS and ICANS, as the
    safety table counts them; a day is known for a subject once it is reached by `as_of` and while the
    subject is on study (a day of death, withdrawal or loss still counts)."""
    days = list(range(last_day + 1))
    worst: dict[str, list[int | None]] = {c: [None] * len(days) for c in HEAT_CATEGORIES}
    followed = [0] * len(days)
    for j in visible:
        infused_on = j.infused_on
        if infused_on is None or infused_on > as_of:
            continue
        off = j.off_study_on if j.off_study_on is not None and j.off_study_on <= as_of else None
        aes = [ae for ae in j.adverse_events_by(as_of) if j.treatment_emergent(ae)]
        for n in days:
            day = infused_on + timedelta(days=n)
            if day > as_of or (off is not None and day > off):
                break
            followed[n] += 1
            for category in HEAT_CATEGORIES:
                grade = max((grade_on_day(ae, day, as_of) for ae in aes if ae.report.category == category), default=0)
                worst[category][n] = max(worst[category][n] or 0, grade)
    return HeatMap(days, worst, followed)


def by_status_and_site(visible: list[journeys.Journey], on: date | None, rt: Runtime) -> dict[str, Any]:
    """Counts of subjects by status (rows, in the journey's order of states) and site (columns): each on
    `on`, or else today at their site, as the read API's `/subjects` counts them."""
    counts: Counter[tuple[str, str]] = Counter(
        (str(journeys.status(j, on or site_today(rt, j.site_id), rt.protocol)), j.site_id or NO_SITE) for j in visible
    )
    sites = sorted({site for _, site in counts})
    rows = [
        {"status": s, "counts": [counts[(s, site)] for site in sites], "total": sum(counts[(s, x)] for x in sites)}
        for s in STATUSES
        if any(counts[(s, site)] for site in sites)
    ]
    totals = [sum(counts[(s, site)] for s in STATUSES) for site in sites]
    return {"sites": sites, "rows": rows, "totals": totals, "total": sum(totals)}


ENDPOINTS = (
    ("os", "Overall survival (OS)", "infusion to death from any cause"),
    ("pfs", "Progression-free survival (PFS)", "infusion to relapse, progressive disease or death"),
    ("dor", "Duration of remission (DOR)", "first CR/CRi to relapse or death; responders only"),
)
VARIANTS = (
    ("censored_at_subsequent_therapy", "Censored at subsequent therapy", "censored"),
    ("not_censored_at_subsequent_therapy", "Not censored at subsequent therapy", "not-censored"),
)


def survival_views(table: efficacy_tables.EfficacyTable) -> list[dict[str, Any]]:
    views = []
    for key, title, definition in ENDPOINTS:
        by_censoring: efficacy_tables.SurvivalByCensoring = getattr(table, key)
        summaries = [(getattr(by_censoring, attr), label, kind) for attr, label, kind in VARIANTS]
        views.append(
            {
                "key": key,
                "title": title,
                "definition": definition,
                "summaries": summaries,
                "chart": km.chart([km.curve(s.km, label, kind) for s, label, kind in summaries]),
                "same": summaries[0][0].km == summaries[1][0].km,
            }
        )
    return views


@router.get("/dashboard/study")
async def study_page(request: Request, rt: Rt, on: str | None = None) -> Response:
    async def render(allowed: Permit) -> Response:
        if on and not ISO_DATE.match(on):
            return message(request, 422, "Invalid date", f"“{on}” is not a date: use YYYY-MM-DD.", allowed.user_id)
        try:
            as_of = date.fromisoformat(on) if on else today_utc()
        except ValueError:
            return message(request, 422, "Invalid date", f"“{on}” is not a date: use YYYY-MM-DD.", allowed.user_id)
        visible = await visible_journeys(rt, allowed)
        # The same two lines as the read API's /study/efficacy and /study/safety, on the same journeys.
        outcomes = [study.outcome(j, as_of) for j in visible]
        efficacy = efficacy_tables.efficacy_table([o for o in outcomes if o is not None], as_of)
        summaries = [study.safety(j, rt.protocol, as_of) for j in visible]
        safety = safety_tables.safety_table([s for s in summaries if s is not None])
        context = {
            "user": allowed.user_id,
            "as_of": as_of,
            "chosen_on": on or "",
            "all_sites": allowed.all_sites or "*" in allowed.roles_by_site,
            "my_sites": sorted(s for s in allowed.roles_by_site if s != "*"),
            "status_site": by_status_and_site(visible, as_of if on else None, rt),
            "efficacy": efficacy,
            "safety": safety,
            "grades": (0, *safety_tables.GRADES),
            "survival": survival_views(efficacy),
            "last_week": km.LAST_DAY // 7,
            "heat": heat_map(visible, as_of, rt.protocol.dlt.window_days),
            "dlt_window": rt.protocol.dlt.window_days,
        }
        return templates.TemplateResponse(request, "study.html", context)

    return await _page(request, rt, Action.STUDY_TABLES, render)
