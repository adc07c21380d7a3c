"""What the system knew at a moment (the events recorded by then) and what was true on a date (every event
as known now, read as of that date), from a subject's history."""

from datetime import UTC, date, datetime, timedelta

from services.followup.history import fold, recorded_by
from services.followup.projections.journey import view
from shared.contract.envelope import Envelope
from shared.contract.events import AECorrected, AEReported, Enrolled, Payload, UCARTInfused
from shared.protocol import load_protocol
from tests.services.followup.envelopes import envelope as recorded

PROTOCOL = load_protocol()
SUBJECT = "UCT-09-001"
DAY0 = date(2025, 6, 2)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def at(on: date) -> datetime:
    return datetime(on.year, on.month, on.day, 10, tzinfo=UTC)


def envelope(payload: Payload, on: date, recorded_on: date) -> Envelope:
    reason = "Onset entered wrongly" if isinstance(payload, AECorrected) else None
    return recorded(payload, at(on), subject_id=SUBJECT, recorded_at=at(recorded_on), reason=reason)


def ae(onset: date) -> dict:
    return {
        "term": "CRS",
        "category": "CRS",
        "grade": 2,
        "serious": False,
        "relatedness": "probable",
        "aware_at": at(onset),
    }


REPORT = AEReported(**ae(day(40)))
EVENTS = [
    envelope(
        Enrolled(
            site_id="09",
            consent_signed_on=day(-14),
            year_of_birth=1980,
            sex="F",
            disease_status="relapsed",
            cd19_positive=True,
        ),
        day(-12),
        day(-12),
    ),
    envelope(UCARTInfused(dose_cells_per_kg=1e7, dose_level=1, product_lot="L", donor_id="D"), DAY0, DAY0),
    envelope(REPORT, day(40), day(41)),
    envelope(AECorrected(ae_id=REPORT.ae_id, **ae(day(5))), day(5), day(50)),  # the onset was day 5
]


def test_as_of_a_moment_only_the_events_recorded_by_then_count():
    assert recorded_by(EVENTS, None) == EVENTS
    assert recorded_by(EVENTS, at(day(41))) == EVENTS[:3]
    known_then = fold(SUBJECT, recorded_by(EVENTS, at(day(45))))
    assert [a.onset_on for a in known_then.adverse_events.values()] == [day(40)]


def test_effective_on_a_date_takes_a_correction_across_that_date():
    journey = fold(SUBJECT, recorded_by(EVENTS, None))
    [shown] = view(journey, day(10), PROTOCOL).adverse_events  # corrected into the past: shown on day 10
    assert (shown.onset_on, shown.corrections) == (day(5), 1)
    assert view(journey, day(4), PROTOCOL).ae_count == 0
