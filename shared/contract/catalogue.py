"""The event catalogue: every (event type, schema version) that was ever published, and its model."""

from __future__ import annotations

from shared.contract import events as e
from shared.contract.events import Payload
from shared.contract.previous import SUPERSEDED

CURRENT: tuple[type[Payload], ...] = (
    e.Enrolled,
    e.ScreenFailed,
    e.ConsentWithdrawn,
    e.LymphodepletionGiven,
    e.UCARTInfused,
    e.InfusionCorrected,
    e.AEReported,
    e.AEUpdated,
    e.AECorrected,
    e.DataQueryOpened,
    e.DataQueryUpdated,
    e.DataQueryAnswered,
    e.DataQueryClosed,
    e.SafetyReportSubmitted,
    e.ResponseAssessed,
    e.PersistenceSampled,
    e.VisitCompleted,
    e.SubsequentTherapyStarted,
    e.LongTermFollowUpStarted,
    e.SurvivalStatusRecorded,
    e.LostToFollowUp,
    e.StudyCompleted,
    e.SubjectDied,
)
ALL: tuple[type[Payload], ...] = (*CURRENT, *SUPERSEDED)
LATEST: dict[str, type[Payload]] = {p.event_type: p for p in CURRENT}
PAYLOADS: dict[tuple[str, int], type[Payload]] = {(p.event_type, p.schema_version): p for p in ALL}


class UnknownEventType(LookupError):
    pass


def payload_model(event_type: str, schema_version: int) -> type[Payload]:
    try:
        return PAYLOADS[(event_type, schema_version)]
    except KeyError:
        known = ", ".join(f"{t} v{v}" for t, v in sorted(PAYLOADS))
        raise UnknownEventType(f"unknown event {event_type} v{schema_version}; known: {known}") from None
