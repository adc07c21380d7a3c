"""Upcasters: every stored version of an event, read as the latest version of its type.

Published payloads never change; when a shape changes, the new shape gets a new schema_version and
an upcaster here (the old model moves to `previous`). Producers write the latest version; consumers and
aggregates read every version through `upcast`, so the rest of the code only knows the latest models.
Each step reads one version as the next; `upcast` repeats them until the payload is the latest.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from shared.contract.envelope import Envelope
from shared.contract.events import AECorrected, AEReported, Payload, ResponseAssessed
from shared.contract.findings import CRSFindings, ICANSFindings
from shared.contract.previous import (
    AECorrectedV1,
    AEReportedV1,
    AEReportedV2,
    ResponseAssessedV1,
    ResponseAssessedV2,
)


def latest_payload(envelope: Envelope) -> Payload:
    """The envelope's payload, validated against its (type, version) model and upcast to the latest
    version: how every reader of an envelope gets its payload."""
    return upcast(envelope.typed_payload(), envelope.occurred_at)


def upcast(payload: Payload, occurred_at: datetime) -> Payload:
    while (newer := _next_version(payload, occurred_at)) is not payload:
        payload = newer
    return payload


def _next_version(payload: Payload, occurred_at: datetime) -> Payload:
    match payload:
        case AEReportedV1():
            # v1 had no awareness time (the onset is the earliest the site can have known) and no
            # seriousness criteria (marked as not specified rather than guessed).
            return AEReportedV2(
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
        case AEReportedV2() | AECorrectedV1():
            # The findings gained values (blow-by oxygen, CAPD, raised-ICP signs); every old value means
            # what it meant.
            newer = AEReported if isinstance(payload, AEReportedV2) else AECorrected
            return newer.model_construct(
                **_fields(payload, exclude={"crs", "icans"}),
                crs=CRSFindings.model_construct(**_fields(payload.crs)) if payload.crs else None,
                icans=ICANSFindings.model_construct(**_fields(payload.icans)) if payload.icans else None,
            )
        case ResponseAssessedV1():
            return ResponseAssessedV2(
                timepoint=payload.timepoint,
                response=payload.response,
                marrow_blasts_pct=payload.marrow_blasts_pct,
                mrd_negative=payload.mrd_negative,
                cd19_status=payload.cd19_status,
            )
        case ResponseAssessedV2():
            return ResponseAssessed.model_construct(**_fields(payload))
    return payload


def _fields(model: BaseModel, exclude: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """The model's values as they are (nested models stay models): for models read as a newer version
    without validating again, since what was stored under the old rules must still load."""
    return {name: getattr(model, name) for name in type(model).model_fields if name not in exclude}
