"""Upcasters: every stored version of an event, read as the latest version of its type.

Published payloads never change; when a shape changes, the new shape gets a new schema_version and
an upcaster here. Producers write the latest version; consumers and aggregates read every version
through `upcast`, so the rest of the code only knows the latest models.
"""

from __future__ import annotations

from datetime import datetime

from shared.contract.envelope import Envelope
from shared.contract.events import (
    AEReported,
    AEReportedV1,
    Payload,
    ResponseAssessed,
    ResponseAssessedV1,
)


def latest_payload(envelope: Envelope) -> Payload:
    """The envelope's payload, validated against its (type, version) model and upcast to the latest
    version: how every reader of an envelope gets its payload."""
    return upcast(envelope.typed_payload(), envelope.occurred_at)


def upcast(payload: Payload, occurred_at: datetime) -> Payload:
    match payload:
        case AEReportedV1():
            # v1 had no awareness time (the onset is the earliest the site can have known) and no
            # seriousness criteria (marked as not specified rather than guessed).
            return AEReported(
                ae_id=payload.ae_id,
                term=payload.term,
                category=payload.category,
                grade=payload.grade,
                serious=payload.serious,
                seriousness_criteria=("not_specified",) if payload.serious else (),
                relatedness=payload.relatedness,
                expected=None,
                aware_at=occurred_at,
            )
        case ResponseAssessedV1():
            return ResponseAssessed(
                timepoint=payload.timepoint,
                response=payload.response,
                marrow_blasts_pct=payload.marrow_blasts_pct,
                mrd_negative=payload.mrd_negative,
                cd19_status=payload.cd19_status,
            )
    return payload
