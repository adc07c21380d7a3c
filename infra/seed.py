"""A realistic synthetic demo cohort, entered through the services' own HTTP APIs.

Dates are relative to today, so every run shows subjects at every stage: screening failure, enrolled,
lymphodepleting (with an AE during lymphodepletion), in the DLT window, in follow-up with responses, in
long-term follow-up (with a month-6 assessment), relapsed, progressing, withdrawn, dead, and survival
contacts after the main follow-up ended. Rates loosely follow the UCART19 and ThisCAR-T cohorts (DOMAIN.md):
most subjects get grade 1-2 CRS, a few ICANS, most reach CR/CRi at week 4.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as clock
from typing import Any

import httpx

from shared.config import Settings
from shared.contract.topics import Source
from shared.protocol import load_protocol
from shared.time import today_in

FCA = [  # fludarabine + cyclophosphamide + alemtuzumab, per day
    {"agent": "fludarabine", "dose": 30, "unit": "mg/m2"},
    {"agent": "cyclophosphamide", "dose": 500, "unit": "mg/m2"},
    {"agent": "alemtuzumab", "dose": 12, "unit": "mg"},
]
FC = FCA[:2]


@dataclass
class Step:
    service: Source
    path: str
    day: int  # relative to today
    payload: dict[str, Any]
    reason: str | None = None
    ae: tuple[str, int] | None = None  # refers to the AE reported with this (term, day)


@dataclass
class SeedSubject:
    subject_id: str
    expected_status: str  # what the journey projection should show today
    steps: list[Step] = field(default_factory=list)

    @property
    def site(self) -> str:
        return self.subject_id.split("-")[1]


def _enrol(day: int, sex: str, born: int, status: str = "relapsed", site: str = "01") -> Step:
    return Step(
        "enrollment",
        "enrolment",
        day,
        {
            "site_id": site,
            "consent_signed_on": None,
            "year_of_birth": born,
            "sex": sex,
            "disease_status": status,
            "cd19_positive": True,
        },
    )


def _treated(
    infusion_day: int, ld_days: int = 3, regimen: list[dict[str, Any]] | None = None, dose: float = 1e7, level: int = 1
) -> list[Step]:
    ld = [
        Step("treatment", "lymphodepletion-days", infusion_day - ld_days - 2 + i, {"agents": regimen or FCA})
        for i in range(ld_days)
    ]
    return [
        *ld,
        Step(
            "treatment",
            "infusion",
            infusion_day,
            {
                "dose_cells_per_kg": dose,
                "dose_level": level,
                "product_lot": f"UC19-L{abs(infusion_day):03d}",
                "donor_id": "D-0042",
            },
        ),
    ]


CRS_TERM, ICANS_TERM = "Cytokine release syndrome", "Immune effector cell-associated neurotoxicity syndrome"


def _ae(
    day: int,
    category: str,
    grade: int,
    term: str,
    serious: tuple[str, ...] = (),
    rel: str = "probable",
    expected: bool | None = True,
    **findings: dict[str, Any],
) -> Step:
    return Step(
        "followup",
        "adverse-events",
        day,
        {
            "term": term,
            "category": category,
            "grade": grade,
            "serious": bool(serious),
            "seriousness_criteria": list(serious),
            "relatedness": rel,
            "expected": expected,
            **findings,
        },
    )


def _crs(day: int, grade: int, **kwargs: Any) -> Step:
    """A CRS with findings that give the same ASTCT grade as the investigator's."""
    by_grade: dict[int, dict[str, Any]] = {
        1: {"max_temperature_c": 38.6},
        2: {"max_temperature_c": 39.1, "hypotension": True},
        3: {"max_temperature_c": 39.4, "hypotension": True, "vasopressors": 1},
        4: {"max_temperature_c": 40.1, "hypotension": True, "vasopressors": 2, "oxygen_delivery": "bipap"},
    }
    return _ae(day, "CRS", grade, CRS_TERM, crs=by_grade[grade], **kwargs)


def _recovered(ae: tuple[str, int], day: int) -> Step:
    """The AE (term, day reported) recovered on `day`."""
    return Step("followup", "adverse-event-updates", day, {"outcome": "recovered"}, ae=ae)


def _report(day: int, ae: tuple[str, int], report: str = "sae_to_sponsor") -> Step:
    return Step("followup", "safety-reports", day, {"report": report}, ae=ae)


def _response(
    day: int, timepoint: str, response: str, blasts: float, mrd: bool | None = None, cd19: str | None = None
) -> Step:
    payload = {"timepoint": timepoint, "response": response, "marrow_blasts_pct": blasts, "mrd_negative": mrd}
    if response in ("CR", "CRi"):
        payload |= {
            "anc_10e9_per_l": 1.6 if response == "CR" else 0.7,
            "platelets_10e9_per_l": 140.0,
            "circulating_blasts": False,
            "extramedullary_disease": False,
        }
    if cd19:
        payload["cd19_status"] = cd19
    return Step("followup", "response-assessments", day, payload)


def _survival(day: int, visit_code: str | None = None, method: str = "phone") -> Step:
    return Step("followup", "survival-status", day, {"status": "alive", "method": method, "visit_code": visit_code})


def _persistence(day0: int, code: str, day: int, copies: float, car_pct: float) -> Step:
    return Step(
        "followup",
        "persistence-samples",
        day0 + day,
        {"visit_code": code, "qpcr_copies_per_ug_dna": copies, "flow_car_pct_of_cd3": car_pct},
    )


def _visits(day0: int, *codes_days: tuple[str, int]) -> list[Step]:
    return [Step("followup", "visits", day0 + d, {"visit_code": code}) for code, d in codes_days]


def _expansion(day: int) -> tuple[float, float]:
    """qPCR copies/ug DNA and % CAR+ of CD3+ on a study day: expansion to a peak in the second week,
    then a slow decline (about a hundred copies by week 24)."""
    if day < 14:
        return 45_000.0, 12.0
    return float(round(60_000 * 0.96 ** (day - 14), -1)), round(15 * 0.97 ** (day - 14), 1)


def _kept(day0: int, until: int, *, missing: tuple[str, ...] = ()) -> list[Step]:
    """The safety visits and persistence samples a site kept, each on its target day, up to study day
    `until`, except those `missing` (left due or overdue on purpose). The schedule is the protocol's."""
    steps = []
    for visit in load_protocol().followup.visits:
        if visit.target_day > until or visit.code in missing:
            continue
        if visit.kind == "safety":
            steps.append(Step("followup", "visits", day0 + visit.target_day, {"visit_code": visit.code}))
        elif visit.kind == "persistence":
            steps.append(_persistence(day0, visit.code, visit.target_day, *_expansion(visit.target_day)))
    return steps


def cohort() -> list[SeedSubject]:
    s = []
    d0 = -200  # in long-term follow-up, month-6 assessment done, then an allo-HSCT consolidation
    s.append(
        SeedSubject(
            "UCT-01-001",
            "long_term_follow_up",
            [
                _enrol(d0 - 12, "F", 1988),
                *_treated(d0),
                _crs(d0 + 2, 1),
                _recovered((CRS_TERM, d0 + 2), d0 + 7),
                *_kept(d0, 190),
                _response(d0 + 28, "W4", "CR", 1.0, True),
                _response(d0 + 56, "W8", "CR", 0.5, True),
                _response(d0 + 84, "W12", "CR", 0.5, True),
                _response(d0 + 183, "M6", "CR", 0.3, True),
                Step(
                    "followup", "subsequent-therapies", d0 + 190, {"therapy": "allo_hsct", "details": "consolidation"}
                ),
            ],
        )
    )
    d0 = -120  # an ICANS that worsened to grade 3 on day 31: outside the DLT window, so not a DLT
    s.append(
        SeedSubject(
            "UCT-01-002",
            "long_term_follow_up",
            [
                _enrol(d0 - 10, "M", 1975),
                *_treated(d0, 4),
                _crs(d0 + 3, 2),
                _recovered((CRS_TERM, d0 + 3), d0 + 10),
                _ae(d0 + 5, "ICANS", 1, ICANS_TERM, icans={"ice_score": 8}),
                _ae(d0 + 26, "ICANS", 1, "Delayed neurotoxicity", rel="possible"),
                Step("followup", "adverse-event-updates", d0 + 31, {"grade": 3}, ae=("Delayed neurotoxicity", d0 + 26)),
                Step(
                    "followup",
                    "adverse-event-updates",
                    d0 + 40,
                    {"outcome": "recovered"},
                    ae=("Delayed neurotoxicity", d0 + 26),
                ),
                *_kept(d0, 120, missing=("PERS_W16",)),
                _response(d0 + 28, "W4", "CR", 2.0, True),
                _response(d0 + 56, "W8", "CRi", 3.0, False),
                _response(d0 + 85, "W12", "CR", 1.0, True),
            ],
        )
    )
    d0 = -60  # the investigator graded CRS 2, the findings say 3: an open data query
    s.append(
        SeedSubject(
            "UCT-01-003",
            "follow_up",
            [
                _enrol(d0 - 9, "F", 2001, "refractory"),
                _ae(d0 - 8, "INFECTION", 1, "Central line site infection", rel="unrelated"),  # before LD
                *_treated(d0),
                _ae(
                    d0 + 1,
                    "CRS",
                    2,
                    CRS_TERM,
                    crs={"max_temperature_c": 38.9, "oxygen_delivery": "nasal_cannula", "oxygen_flow_l_min": 8.0},
                ),
                Step("followup", "adverse-event-updates", d0 + 6, {"outcome": "recovered"}, ae=(CRS_TERM, d0 + 1)),
                _ae(d0 + 6, "ICANS", 1, ICANS_TERM, icans={"ice_score": 9}),
                *_kept(d0, 60, missing=("D21", "PERS_W8")),  # the week-8 sample is due
                *_visits(d0, ("D21", 24)),  # D21 late: completed out of window
                _response(d0 + 29, "W4", "CR", 1.5, True),
            ],
        )
    )
    d0 = -40  # grade 3 CRS: a DLT and an SAE reported on time; the grade query answered and closed
    s.append(
        SeedSubject(
            "UCT-02-004",
            "follow_up",
            [
                _enrol(d0 - 11, "M", 1969, site="02"),
                *_treated(d0, 3, FC, 3e7, 2),
                _ae(d0 - 3, "CYTOPENIA", 2, "Neutropenia during lymphodepletion", rel="unrelated"),
                _crs(d0 + 2, 3, serious=("hospitalisation",)),
                _recovered((CRS_TERM, d0 + 2), d0 + 11),
                _report(d0 + 3, (CRS_TERM, d0 + 2)),
                _ae(d0 + 9, "INFECTION", 3, "Febrile neutropenia", serious=("hospitalisation",), rel="possible"),
                _report(d0 + 10, ("Febrile neutropenia", d0 + 9)),
                _ae(d0 + 4, "ICANS", 1, ICANS_TERM, icans={"ice_score": 5}),
                Step(
                    "followup",
                    "query-answers",
                    d0 + 6,
                    {"answer": "ICE 5 was at 02:00 under sedation; grade 1 confirmed by neurology."},
                ),
                Step(
                    "followup",
                    "query-closures",
                    d0 + 8,
                    {"resolution": "Investigator grade kept; explanation accepted."},
                ),
                *_kept(d0, 40),
                _response(d0 + 27, "W4", "CRi", 4.0, False),
            ],
        )
    )
    d0 = -10
    s.append(
        SeedSubject(
            "UCT-02-005",
            "infused",
            [
                _enrol(d0 - 10, "F", 1994, site="02"),
                *_treated(d0, 3, FCA, 3e7, 2),
                _crs(d0 + 1, 2),
                _recovered((CRS_TERM, d0 + 1), d0 + 8),
                *_kept(d0, 7),  # D10 is due
            ],
        )
    )
    d0 = -3
    s.append(
        SeedSubject(
            "UCT-01-006",
            "infused",
            [_enrol(d0 - 9, "M", 1982), *_treated(d0), _crs(d0 + 1, 1), *_visits(d0, ("D1", 1))],
        )
    )
    s.append(
        SeedSubject(
            "UCT-01-007",
            "lymphodepleting",
            [
                _enrol(-6, "F", 1990),
                Step("treatment", "lymphodepletion-days", -1, {"agents": FCA}),
                Step("treatment", "lymphodepletion-days", 0, {"agents": FCA}),
                _ae(0, "OTHER", 1, "Nausea", rel="unrelated"),
            ],
        )
    )
    s.append(SeedSubject("UCT-02-008", "enrolled", [_enrol(-2, "M", 1979, site="02")]))
    s.append(
        SeedSubject(
            "UCT-02-009",
            "screen_failed",
            [
                Step(
                    "enrollment",
                    "screen-failure",
                    -15,
                    {"site_id": "02", "failure_reason": "CD19-negative blasts at screening"},
                )
            ],
        )
    )
    s.append(
        SeedSubject(
            "UCT-01-010",
            "withdrawn",
            [
                _enrol(-30, "F", 1985),
                Step("treatment", "lymphodepletion-days", -28, {"agents": FC}),
                Step(
                    "enrollment",
                    "consent-withdrawal",
                    -25,
                    {"withdrawal_reason": "Subject chose to pursue treatment closer to home"},
                ),
            ],
        )
    )
    d0 = -70  # grade 4 CRS and an unexpected grade 4 ICANS (a SUSAR), no response, death
    s.append(
        SeedSubject(
            "UCT-02-011",
            "died",
            [
                _enrol(d0 - 10, "M", 1958, site="02"),
                *_treated(d0, 3, FCA, 5e7, 3),
                _crs(d0 + 2, 4, serious=("life_threatening",), rel="definite"),
                _recovered((CRS_TERM, d0 + 2), d0 + 13),
                _report(d0 + 3, (CRS_TERM, d0 + 2)),
                _ae(
                    d0 + 5,
                    "ICANS",
                    4,
                    ICANS_TERM,
                    serious=("life_threatening",),
                    rel="definite",
                    expected=False,
                    icans={"ice_score": 0, "consciousness": "unarousable"},
                ),
                _report(d0 + 6, (ICANS_TERM, d0 + 5)),
                _report(d0 + 9, (ICANS_TERM, d0 + 5), "susar_to_regulator"),
                *_kept(d0, 28, missing=("D28", "PERS_D28")),  # missed in intensive care
                _response(d0 + 28, "W4", "NR", 35.0),
                Step("followup", "death", d0 + 35, {"primary_cause": "disease_progression"}),
            ],
        )
    )
    d0 = -150  # CD19-negative relapse at week 12, main follow-up completed, survival contacts since
    s.append(
        SeedSubject(
            "UCT-01-012",
            "completed",
            [
                _enrol(d0 - 10, "F", 1999),
                *_treated(d0),
                _crs(d0 + 2, 1),
                _recovered((CRS_TERM, d0 + 2), d0 + 7),
                *_kept(d0, 84),
                _response(d0 + 28, "W4", "CR", 0.8, True),
                _response(d0 + 57, "W8", "CR", 1.2, False),
                _response(d0 + 84, "W12", "RELAPSE", 22.0, cd19="CD19-"),
                Step("followup", "study-completion", d0 + 90, {"completed": "main_follow_up"}),
                _survival(d0 + 113, "SURV_W16"),
                _survival(d0 + 141, "SURV_W20", "visit"),
            ],
        )
    )
    d0 = -95  # refractory, then progressive disease at weeks 8 and 12
    s.append(
        SeedSubject(
            "UCT-02-013",
            "completed",
            [
                _enrol(d0 - 12, "M", 1971, site="02"),
                *_treated(d0, 5, FC),
                _crs(d0 + 4, 2),
                _recovered((CRS_TERM, d0 + 4), d0 + 11),
                *_kept(d0, 84),
                _response(d0 + 28, "W4", "NR", 41.0),
                _response(d0 + 56, "W8", "PD", 55.0),
                _response(d0 + 84, "W12", "PD", 72.0),
                Step("followup", "subsequent-therapies", d0 + 86, {"therapy": "inotuzumab"}),
                Step("followup", "study-completion", d0 + 88, {"completed": "main_follow_up"}),
            ],
        )
    )
    d0 = -25  # infusion date corrected (entered a day early), then skin GvHD
    s.append(
        SeedSubject(
            "UCT-01-014",
            "infused",
            [
                _enrol(d0 - 9, "F", 1996),
                *_treated(d0 - 1),
                Step(
                    "treatment",
                    "infusion-corrections",
                    d0,
                    {"dose_cells_per_kg": 1e7, "dose_level": 1, "product_lot": "UC19-L026", "donor_id": "D-0042"},
                    reason="Transcription error: the infusion was given the next morning (pharmacy log).",
                ),
                _crs(d0 + 2, 1),
                _recovered((CRS_TERM, d0 + 2), d0 + 7),
                _ae(d0 + 18, "GVHD", 1, "Acute skin graft-versus-host disease", rel="possible", gvhd={"skin_stage": 1}),
                *_kept(d0, 21, missing=("D21",)),  # D21 missed; D28 is due
            ],
        )
    )
    d0 = -130
    s.append(
        SeedSubject(
            "UCT-02-015",
            "lost_to_follow_up",
            [
                _enrol(d0 - 10, "F", 1992, site="02"),
                *_treated(d0),
                _crs(d0 + 2, 1),
                _recovered((CRS_TERM, d0 + 2), d0 + 7),
                *_kept(d0, 84),
                _response(d0 + 28, "W4", "CR", 1.0, True),
                _response(d0 + 56, "W8", "CR", 0.9, True),
                Step("followup", "lost-to-follow-up", d0 + 110, {"last_contact_on": None, "details": "moved abroad"}),
            ],
        )
    )
    d0 = -380  # long-term follow-up completed at month 12
    s.append(
        SeedSubject(
            "UCT-01-016",
            "completed",
            [
                _enrol(d0 - 10, "M", 1986),
                *_treated(d0),
                _crs(d0 + 2, 2),
                _recovered((CRS_TERM, d0 + 2), d0 + 9),
                _response(d0 + 28, "W4", "CR", 0.4, True),
                _response(d0 + 56, "W8", "CR", 0.2, True),
                _response(d0 + 84, "W12", "CR", 0.1, True),
                *_kept(d0, 168),
                *_visits(d0, ("LTFU_M6", 182), ("LTFU_M9", 275), ("LTFU_M12", 365)),
                Step("followup", "study-completion", d0 + 366, {"completed": "long_term_follow_up"}),
            ],
        )
    )
    d0 = -45  # a child of 8: CRS on blow-by oxygen, ICANS graded by CAPD (ASTCT, under 12)
    s.append(
        SeedSubject(
            "UCT-02-017",
            "follow_up",
            [
                _enrol(d0 - 10, "M", datetime.now(UTC).year - 8, site="02"),
                *_treated(d0, 3, FCA, 1e7, 1),
                _ae(d0 + 2, "CRS", 2, CRS_TERM, crs={"max_temperature_c": 39.0, "oxygen_delivery": "blow_by"}),
                _ae(d0 + 5, "ICANS", 1, ICANS_TERM, icans={"capd_score": 6}),
                *_kept(d0, 45),
                _response(d0 + 28, "W4", "CR", 0.9, True),
            ],
        )
    )
    return s


def occurred_at(day: int, zone: tzinfo, today: date) -> datetime:
    """09:00 at the site on that day (`today` on the site's calendar); never in the future."""
    at = datetime.combine(today + timedelta(days=day), clock(9, 0), zone)
    return min(at, datetime.now(UTC).astimezone(zone) - timedelta(minutes=1))


class SeedError(RuntimeError):
    pass


def post(client: httpx.Client, url: str, body: dict[str, Any], key: str, timeout: float = 45.0) -> dict[str, Any]:
    """POST a command; retry while the refusal is marked retryable (the service has not yet learned
    from Kafka what another service recorded)."""
    headers = {"Idempotency-Key": key}  # the client carries the seeder's token
    deadline = time.monotonic() + timeout
    while True:
        response = client.post(url, json=body, headers=headers)
        if response.status_code == 201:
            answer: dict[str, Any] = response.json()
            return answer
        problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        if problem.get("retryable") and time.monotonic() < deadline:
            time.sleep(0.3)
            continue
        raise SeedError(f"POST {url} -> {response.status_code}: {problem.get('detail', response.text)}")


@dataclass
class Entry:
    """One subject's commands as a site enters them: each body dated on the site's calendar, naming
    what earlier commands recorded (an AE update the AE's generated id, a query answer the query's id),
    learnt from the events each answer carried."""

    zone: tzinfo
    today: date  # on the site's calendar
    aes: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)  # (term, day) -> the stored AE
    query_id: str | None = None

    def body(self, step: Step) -> dict[str, Any]:
        at = occurred_at(step.day, self.zone, self.today)
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

    def learn(self, step: Step, event_type: str, payload: dict[str, Any]) -> None:
        if event_type == "AEReported":
            self.aes[(payload["term"], step.day)] = payload
        if event_type == "DataQueryOpened":
            self.query_id = str(payload["query_id"])


def _seed_subject(client: httpx.Client, settings: Settings, subject: SeedSubject, entry: Entry) -> None:
    for n, step in enumerate(subject.steps):
        url = f"{settings.url(step.service)}/subjects/{subject.subject_id}/{step.path}"
        answer = post(client, url, entry.body(step), key=f"seed-{subject.subject_id}-{n}-{entry.today}")
        for event in answer["events"]:
            entry.learn(step, event["event_type"], event["payload"])


def seed(
    settings: Settings, token: str, today: date | None = None, progress: Callable[[str], None] | None = None
) -> tuple[int, int]:
    """Enter the cohort as the person `token` identifies; subjects enrollment already knows are
    skipped. Dates count from `today` (default: today on each site's calendar). Returns (seeded, skipped)."""
    protocol = load_protocol(settings.protocol_file)
    subjects = cohort()
    seeded = skipped = 0
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {token}"}) as client:
        for subject in subjects:
            if client.get(f"{settings.url('enrollment')}/subjects/{subject.subject_id}").status_code == 200:
                skipped += 1
            else:
                zone = protocol.zone(subject.site)
                _seed_subject(client, settings, subject, Entry(zone, today or today_in(zone)))
                seeded += 1
            if progress:
                progress(subject.subject_id)
    return seeded, skipped
