"""Efficacy tables (DOMAIN.md "Endpoints"): ORR at W4/W8/W12 and Kaplan-Meier summaries of OS, PFS, DOR.

Time-to-event rules, all in days, on the data known at the cut-off `as_of`: anything dated later is
ignored, so a table for a past date can be reproduced, and nothing is extrapolated to the cut-off.
- OS: infusion -> death from any cause. Censored on the last date the subject is known alive by the
  cut-off: the latest of the infusion, every clinical record and alive survival contact dated by then,
  and the last contact a loss to follow-up declared by then gives. A later contact or death is not
  known at the cut-off, so it does not make the subject alive on the cut-off.
- PFS: infusion -> progression (relapse or progressive disease) or death, whichever first; censored at
  the last disease assessment (months 6-12 included).
- DOR: subjects with a CR/CRi only; first CR/CRi -> the first progression after it (a relapse: PD is for
  subjects never in remission) or death; censored at the last disease assessment.
- censor_at_subsequent_therapy: a subject whose subsequent therapy comes before the event (or before
  the censoring date) is censored on the day of the subsequent therapy; on the same day the event counts.
- Survival at weeks 12 and 24 is estimable only while a subject's follow-up reaches the day (or the
  curve has already reached 0); otherwise the table says why rather than print the last value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

from services.followup.study.inputs import SubjectOutcome
from services.followup.study.survival import KaplanMeier, kaplan_meier
from shared import clinical

ORR_TIMEPOINTS = ("W4", "W8", "W12")
AT_RISK_WEEKS = (0, 4, 8, 12, 16, 20, 24)
WEEK_12, WEEK_24 = 84, 168


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class ObjectiveResponse(_Frozen):
    timepoint: str
    numerator: int
    denominator: int
    rate: float | None
    denominator_definition: str


class SubjectTime(_Frozen):
    """One subject's contribution to a Kaplan-Meier curve."""

    subject_id: str
    days: int
    event: bool


class SurvivalAt(_Frozen):
    """S(day) and its 95% CI where follow-up supports an estimate; otherwise None and the reason."""

    day: int
    estimable: bool
    survival: float | None = None
    ci_lower: float | None = None
    ci_upper: float | None = None
    at_risk: int = Field(description="Subjects still followed after the day (as under a lifelines plot).")
    reason: str | None = None


class AtRisk(_Frozen):
    """The numbers under a Kaplan-Meier plot at a week: at risk after the day, censored and events by it."""

    week: int
    day: int
    at_risk: int
    censored: int
    events: int


class SurvivalSummary(_Frozen):
    endpoint: str
    censor_at_subsequent_therapy: bool
    as_of: date
    n: int
    events: int
    censored: int
    week_12: SurvivalAt
    week_24: SurvivalAt
    median_days: float | None  # None = not reached
    median_ci_lower: float | None
    median_ci_upper: float | None  # None = not reached (unbounded)
    at_risk: tuple[AtRisk, ...]
    km: KaplanMeier | None  # None when there are no subjects (e.g. DOR without responders)


class SurvivalByCensoring(_Frozen):
    censored_at_subsequent_therapy: SurvivalSummary
    not_censored_at_subsequent_therapy: SurvivalSummary


class EfficacyTable(_Frozen):
    as_of: date
    subjects_infused: int
    orr: tuple[ObjectiveResponse, ...]
    os: SurvivalByCensoring
    pfs: SurvivalByCensoring
    dor: SurvivalByCensoring


def objective_response(outcomes: Sequence[SubjectOutcome], timepoint: str) -> ObjectiveResponse:
    """(CR + CRi) at the timepoint / subjects infused. A subject's latest assessment at the timepoint
    counts; a subject without one (missed, died, off study) is a non-responder."""
    numerator = 0
    for o in outcomes:
        at_timepoint = [a for a in o.assessments if a.timepoint == timepoint]
        if at_timepoint and max(at_timepoint, key=lambda a: a.assessed_on).response in clinical.REMISSION:
            numerator += 1
    denominator = len(outcomes)
    return ObjectiveResponse(
        timepoint=timepoint,
        numerator=numerator,
        denominator=denominator,
        rate=numerator / denominator if denominator else None,
        denominator_definition=(
            f"all subjects infused (N={denominator}); subjects without a {timepoint} assessment count as non-responders"
        ),
    )


def _cut(o: SubjectOutcome, as_of: date) -> SubjectOutcome:
    """The subject as known on as_of."""
    if o.infused_on > as_of:
        raise ValueError(f"{o.subject_id} was infused after the cut-off {as_of}")

    def known(d: date | None) -> date | None:
        return d if d is not None and d <= as_of else None

    return dataclasses.replace(
        o,
        assessments=tuple(a for a in o.assessments if a.assessed_on <= as_of),
        died_on=known(o.died_on),
        known_alive=tuple(k for k in o.known_alive if k.by(as_of)),
        subsequent_therapy_on=known(o.subsequent_therapy_on),
    )


def last_known_alive(o: SubjectOutcome) -> date:
    """The latest date the (cut) subject is known alive; assessments and therapy are records of the subject too."""
    dates = [o.infused_on, o.last_assessment_on, o.subsequent_therapy_on, *(k.alive_on for k in o.known_alive)]
    return max(d for d in dates if d is not None)


def _time(
    o: SubjectOutcome, start: date, event_on: date | None, censor_on: date, censor_at_subsequent: bool
) -> SubjectTime:
    end, event = (event_on, True) if event_on is not None else (censor_on, False)
    if censor_at_subsequent and o.subsequent_therapy_on is not None and o.subsequent_therapy_on < end:
        # max(): subsequent therapy before the response began leaves no follow-up (censored at day 0)
        end, event = max(o.subsequent_therapy_on, start), False
    if end < start:
        raise ValueError(f"{o.subject_id}: end of follow-up {end} before its start {start}")
    return SubjectTime(subject_id=o.subject_id, days=(end - start).days, event=event)


def _first(*dates: date | None) -> date | None:
    return min((d for d in dates if d is not None), default=None)


def os_times(outcomes: Sequence[SubjectOutcome], censor_at_subsequent_therapy: bool, as_of: date) -> list[SubjectTime]:
    return [
        _time(o, o.infused_on, o.died_on, last_known_alive(o), censor_at_subsequent_therapy)
        for o in (_cut(o, as_of) for o in outcomes)
    ]


def pfs_times(outcomes: Sequence[SubjectOutcome], censor_at_subsequent_therapy: bool, as_of: date) -> list[SubjectTime]:
    return [
        _time(o, o.infused_on, _first(o.progressed_on, o.died_on), o.last_assessment_on, censor_at_subsequent_therapy)
        for o in (_cut(o, as_of) for o in outcomes)
    ]


def dor_times(outcomes: Sequence[SubjectOutcome], censor_at_subsequent_therapy: bool, as_of: date) -> list[SubjectTime]:
    return [
        _time(o, response_on, _first(o.relapsed_on, o.died_on), o.last_assessment_on, censor_at_subsequent_therapy)
        for o in (_cut(o, as_of) for o in outcomes)
        if (response_on := o.first_remission_on) is not None  # DOR is defined for responders only
    ]


def survival_at(km: KaplanMeier | None, day: int) -> SurvivalAt:
    """S(day) with its confidence interval, or why it cannot be estimated: past the longest follow-up the
    curve only reflects missing follow-up, unless it has already reached 0."""
    if km is None:
        return SurvivalAt(day=day, estimable=False, at_risk=0, reason="no subjects to estimate from")
    longest, at_risk = km.times[-1], km.at_risk_at(day)
    if day > longest and km.survival[-1] > 0:
        reason = f"no subject remains at risk at day {day}: the longest follow-up is {longest:g} days (censored)"
        return SurvivalAt(day=day, estimable=False, at_risk=at_risk, reason=reason)
    lower, upper = km.ci_at(day)
    return SurvivalAt(
        day=day, estimable=True, survival=km.survival_at(day), ci_lower=lower, ci_upper=upper, at_risk=at_risk
    )


def _at_risk(km: KaplanMeier | None, week: int) -> AtRisk:
    day = 7 * week
    if km is None:
        return AtRisk(week=week, day=day, at_risk=0, censored=0, events=0)
    return AtRisk(
        week=week, day=day, at_risk=km.at_risk_at(day), censored=km.censored_by(day), events=km.events_by(day)
    )


def _summarise(endpoint: str, times: list[SubjectTime], censor: bool, as_of: date) -> SurvivalSummary:
    km = kaplan_meier([t.days for t in times], [t.event for t in times]) if times else None
    median_ci = km.median_ci() if km else (None, None)
    events = sum(t.event for t in times)
    return SurvivalSummary(
        endpoint=endpoint,
        censor_at_subsequent_therapy=censor,
        as_of=as_of,
        n=len(times),
        events=events,
        censored=len(times) - events,
        week_12=survival_at(km, WEEK_12),
        week_24=survival_at(km, WEEK_24),
        median_days=km.median() if km else None,
        median_ci_lower=median_ci[0],
        median_ci_upper=median_ci[1],
        at_risk=tuple(_at_risk(km, w) for w in AT_RISK_WEEKS),
        km=km,
    )


def overall_survival(
    outcomes: Sequence[SubjectOutcome], censor_at_subsequent_therapy: bool, as_of: date
) -> SurvivalSummary:
    times = os_times(outcomes, censor_at_subsequent_therapy, as_of)
    return _summarise("OS", times, censor_at_subsequent_therapy, as_of)


def progression_free_survival(
    outcomes: Sequence[SubjectOutcome], censor_at_subsequent_therapy: bool, as_of: date
) -> SurvivalSummary:
    times = pfs_times(outcomes, censor_at_subsequent_therapy, as_of)
    return _summarise("PFS", times, censor_at_subsequent_therapy, as_of)


def duration_of_remission(
    outcomes: Sequence[SubjectOutcome], censor_at_subsequent_therapy: bool, as_of: date
) -> SurvivalSummary:
    times = dor_times(outcomes, censor_at_subsequent_therapy, as_of)
    return _summarise("DOR", times, censor_at_subsequent_therapy, as_of)


def efficacy_table(outcomes: Sequence[SubjectOutcome], as_of: date) -> EfficacyTable:
    cut = [_cut(o, as_of) for o in outcomes]  # ORR too counts only assessments known on as_of

    def both(summary: Callable[[Sequence[SubjectOutcome], bool, date], SurvivalSummary]) -> SurvivalByCensoring:
        return SurvivalByCensoring(
            censored_at_subsequent_therapy=summary(cut, True, as_of),
            not_censored_at_subsequent_therapy=summary(cut, False, as_of),
        )

    return EfficacyTable(
        as_of=as_of,
        subjects_infused=len(cut),
        orr=tuple(objective_response(cut, tp) for tp in ORR_TIMEPOINTS),
        os=both(overall_survival),
        pfs=both(progression_free_survival),
        dor=both(duration_of_remission),
    )
