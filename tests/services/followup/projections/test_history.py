"""What the system knew at a moment (the events recorded by then) and what was true on a date (every event
as known now, read as of that date), from a subject's history."""

from datetime import UTC, date, datetime, timedelta
from uuid import uuid4

from services.followup.history import fold, recorded_by
from services.followup.projections.journey import view
from shared.contract.envelope import Envelope, RecordedBy
from shared.contract.events import AECorrected, AEReported, Enrolled, Payload, UCARTInfused
from shared.protocol import load_protocol

PROTOCOL = load_protocol()
SUBJECT = "UCT-09-001"
DAY0 = date(2025, 6, 2)


def day(n: int) -> date:
    return DAY0 + timedelta(days=n)


def at(on: date) -> datetime:
    return datetime(on.year, on.month, on.day, 10, tzinfo=UTC)


def envelope(payload: Payload, on: date, recorded_on: date) -> Envelope:
    return Envelope(
        event_id=uuid4(),
        event_type=payload.event_type,
        schema_version=payload.schema_version,
        subject_id=SUBJECT,
        source=payload.source,
        stream_version=1,
        occurred_at=at(on),
        recorded_at=at(recorded_on),
        recorded_by=RecordedBy(user_id="inv-1", role="investigator"),
        correlation_id=uuid4(),
        reason="Onset entered wrongly" if isinstance(payload, AECorrected) else None,
        protocol_version=PROTOCOL.version,
        payload=payload.model_dump(mode="json"),
    )


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
