"""A realistic synthetic demo cohort, entered through the services' own HTTP APIs.

Dates are relative to today, so every run shows subjects at every stage: screening failure, enrolled,
lymphodepleting, in the DLT window, in follow-up with responses, in long-term follow-up, relapsed,
refractory, withdrawn and dead. Rates loosely follow the UCART19 and ThisCAR-T cohorts (DOMAIN.md):
most subjects get grade 1-2 CRS, a few ICANS, most reach CR/CRi at week 4.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from datetime import time as clock

import httpx

from shared.config import Settings
from shared.contract.envelope import Source

SITES = {"01": timezone(timedelta(hours=1)), "02": timezone(timedelta(hours=8))}
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
    payload: dict
    reason: str | None = None


@dataclass
class SeedSubject:
    subject_id: str
    expected_status: str  # what the journey projection should show today
    steps: list[Step] = field(default_factory=list)

    @property
    def site(self) -> str:
        return self.subject_id.split("-")[1]


def _enrol(day: int, sex: str, born: int, status: str = "relapsed", site: str = "01") -> Step:
    return Step("enrollment", "enrolment", day, {
        "site_id": site, "consent_signed_on": None, "year_of_birth": born, "sex": sex,
        "disease_status": status, "cd19_positive": True})


def _treated(infusion_day: int, ld_days: int = 3, regimen: list | None = None, dose: float = 1e7,
             level: int = 1) -> list[Step]:
    ld = [Step("treatment", "lymphodepletion-days", infusion_day - ld_days - 2 + i, {"agents": regimen or FCA})
          for i in range(ld_days)]
    return ld + [Step("treatment", "infusion", infusion_day, {
        "dose_cells_per_kg": dose, "dose_level": level, "product_lot": f"UC19-L{abs(infusion_day):03d}",
        "donor_id": "D-0042"})]


def _ae(day: int, category: str, grade: int, term: str, serious: bool = False, rel: str = "probable") -> Step:
    return Step("followup", "adverse-events", day, {
        "term": term, "category": category, "grade": grade, "serious": serious, "relatedness": rel})


def _response(day: int, timepoint: str, response: str, blasts: float, mrd: bool | None = None,
              cd19: str | None = None) -> Step:
    payload = {"timepoint": timepoint, "response": response, "marrow_blasts_pct": blasts, "mrd_negative": mrd}
    if cd19:
        payload["cd19_status"] = cd19
    return Step("followup", "response-assessments", day, payload)


def _visits(day0: int, *codes_days: tuple[str, int]) -> list[Step]:
    return [Step("followup", "visits", day0 + d, {"visit_code": code}) for code, d in codes_days]


SAFETY = [("D1", 1), ("D4", 4), ("D7", 7), ("D10", 10), ("D14", 14), ("D21", 21), ("D28", 28)]


def cohort() -> list[SeedSubject]:
    s = []
    d0 = -200  # in long-term follow-up, M6 visit done
    s.append(SeedSubject("UCT-01-001", "long_term_follow_up", [
        _enrol(d0 - 12, "F", 1988), *_treated(d0), _ae(d0 + 2, "CRS", 1, "Cytokine release syndrome"),
        *_visits(d0, *SAFETY, ("PERS_D7", 7), ("PERS_D28", 28), ("LTFU_M6", 183)),
        _response(d0 + 28, "W4", "CR", 1.0, True), _response(d0 + 56, "W8", "CR", 0.5, True),
        _response(d0 + 84, "W12", "CR", 0.5, True)]))
    d0 = -120
    s.append(SeedSubject("UCT-01-002", "long_term_follow_up", [
        _enrol(d0 - 10, "M", 1975), *_treated(d0, 4), _ae(d0 + 3, "CRS", 2, "Cytokine release syndrome"),
        _ae(d0 + 5, "ICANS", 1, "Immune effector cell-associated neurotoxicity syndrome"),
        *_visits(d0, *SAFETY[:5]),
        _response(d0 + 28, "W4", "CR", 2.0, True), _response(d0 + 56, "W8", "CRi", 3.0, False),
        _response(d0 + 85, "W12", "CR", 1.0, True)]))
    d0 = -60
    s.append(SeedSubject("UCT-01-003", "follow_up", [
        _enrol(d0 - 9, "F", 2001, "refractory"), *_treated(d0), _ae(d0 + 1, "CRS", 2, "Cytokine release syndrome"),
        _ae(d0 + 6, "ICANS", 1, "Immune effector cell-associated neurotoxicity syndrome"),
        *_visits(d0, *SAFETY), _response(d0 + 29, "W4", "CR", 1.5, True)]))
    d0 = -40
    s.append(SeedSubject("UCT-02-004", "follow_up", [
        _enrol(d0 - 11, "M", 1969, site="02"), *_treated(d0, 3, FC, 3e7, 2),
        _ae(d0 + 2, "CRS", 3, "Cytokine release syndrome", serious=True),
        _ae(d0 + 9, "INFECTION", 3, "Febrile neutropenia", serious=True, rel="possible"),
        *_visits(d0, *SAFETY), _response(d0 + 27, "W4", "CRi", 4.0, False)]))
    d0 = -10
    s.append(SeedSubject("UCT-02-005", "infused", [
        _enrol(d0 - 10, "F", 1994, site="02"), *_treated(d0, 3, FCA, 3e7, 2),
        _ae(d0 + 1, "CRS", 2, "Cytokine release syndrome"), *_visits(d0, *SAFETY[:3])]))
    d0 = -3
    s.append(SeedSubject("UCT-01-006", "infused", [
        _enrol(d0 - 9, "M", 1982), *_treated(d0), _ae(d0 + 1, "CRS", 1, "Cytokine release syndrome"),
        *_visits(d0, ("D1", 1))]))
    s.append(SeedSubject("UCT-01-007", "lymphodepleting", [
        _enrol(-6, "F", 1990), Step("treatment", "lymphodepletion-days", -1, {"agents": FCA}),
        Step("treatment", "lymphodepletion-days", 0, {"agents": FCA})]))
    s.append(SeedSubject("UCT-02-008", "enrolled", [_enrol(-2, "M", 1979, site="02")]))
    s.append(SeedSubject("UCT-02-009", "screen_failed", [
        Step("enrollment", "screen-failure", -15, {"site_id": "02", "failure_reason": "CD19-negative blasts at screening"})]))
    s.append(SeedSubject("UCT-01-010", "withdrawn", [
        _enrol(-30, "F", 1985), Step("treatment", "lymphodepletion-days", -28, {"agents": FC}),
        Step("enrollment", "consent-withdrawal", -25, {"withdrawal_reason": "Subject chose to pursue treatment closer to home"})]))
    d0 = -70
    s.append(SeedSubject("UCT-02-011", "died", [
        _enrol(d0 - 10, "M", 1958, site="02"), *_treated(d0, 3, FCA, 5e7, 3),
        _ae(d0 + 2, "CRS", 4, "Cytokine release syndrome", serious=True, rel="definite"),
        _ae(d0 + 5, "ICANS", 4, "Immune effector cell-associated neurotoxicity syndrome", serious=True, rel="definite"),
        *_visits(d0, *SAFETY[:6]), _response(d0 + 28, "W4", "NR", 35.0),
        Step("followup", "death", d0 + 35, {"primary_cause": "disease_progression"})]))
    d0 = -150
    s.append(SeedSubject("UCT-01-012", "completed", [
        _enrol(d0 - 10, "F", 1999), *_treated(d0), _ae(d0 + 2, "CRS", 1, "Cytokine release syndrome"),
        _response(d0 + 28, "W4", "CR", 0.8, True), _response(d0 + 57, "W8", "CR", 1.2, False),
        _response(d0 + 84, "W12", "RELAPSE", 22.0, cd19="CD19-")]))
    d0 = -95
    s.append(SeedSubject("UCT-02-013", "completed", [
        _enrol(d0 - 12, "M", 1971, site="02"), *_treated(d0, 5, FC),
        _ae(d0 + 4, "CRS", 2, "Cytokine release syndrome"),
        _response(d0 + 28, "W4", "NR", 41.0), _response(d0 + 56, "W8", "NR", 55.0),
        _response(d0 + 84, "W12", "NR", 60.0)]))
    d0 = -25
    s.append(SeedSubject("UCT-01-014", "infused", [
        _enrol(d0 - 8, "F", 1996), *_treated(d0), _ae(d0 + 2, "CRS", 1, "Cytokine release syndrome"),
        _ae(d0 + 18, "GVHD", 1, "Acute skin graft-versus-host disease", rel="possible"),
        *_visits(d0, *SAFETY[:5])]))
    return s


def occurred_at(day: int, site: str, today: date) -> datetime:
    """09:00 at the site on that day; never in the future."""
    at = datetime.combine(today + timedelta(days=day), clock(9, 0), SITES.get(site, UTC))
    return min(at, datetime.now(UTC).astimezone(at.tzinfo) - timedelta(minutes=1))


class SeedError(RuntimeError):
    pass


def post(client: httpx.Client, url: str, body: dict, key: str, timeout: float = 45.0) -> dict:
    """POST a command; retry while the refusal is marked retryable (the service has not yet learned
    from Kafka what another service recorded)."""
    headers = {"X-User-Id": "demo-seeder", "X-User-Role": "coordinator", "Idempotency-Key": key}
    deadline = time.monotonic() + timeout
    while True:
        response = client.post(url, json=body, headers=headers)
        if response.status_code == 201:
            return response.json()
        problem = response.json() if response.headers.get("content-type", "").endswith("json") else {}
        if problem.get("retryable") and time.monotonic() < deadline:
            time.sleep(0.3)
            continue
        raise SeedError(f"POST {url} -> {response.status_code}: {problem.get('detail', response.text)}")


def seed(settings: Settings, today: date | None = None, progress=None) -> tuple[int, int]:
    """Enter the cohort; subjects enrollment already knows are skipped. Returns (seeded, skipped)."""
    today = today or datetime.now(UTC).date()
    subjects = cohort()
    seeded = skipped = 0
    with httpx.Client(timeout=30) as client:
        for subject in subjects:
            if client.get(f"{settings.url('enrollment')}/subjects/{subject.subject_id}").status_code == 200:
                skipped += 1
            else:
                for n, step in enumerate(subject.steps):
                    payload = dict(step.payload)
                    if step.path == "enrolment":
                        payload["consent_signed_on"] = (today + timedelta(days=step.day - 3)).isoformat()
                    body = {"occurred_at": occurred_at(step.day, subject.site, today).isoformat(),
                            "payload": payload}
                    url = f"{settings.url(step.service)}/subjects/{subject.subject_id}/{step.path}"
                    post(client, url, body, key=f"seed-{subject.subject_id}-{n}-{today}")
                seeded += 1
            if progress:
                progress(subject.subject_id)
    return seeded, skipped
