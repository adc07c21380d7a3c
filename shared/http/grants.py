"""The admin API of access: grant and revoke roles (study admin only), list the grants and their
history, and read the log of audit-trail reads (auditors). Served by every service; the grants are
one event store, so any service's answer is the same."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import Field

from shared.access import grants, reads
from shared.access.policy import Role
from shared.contract.strict import ClientInput
from shared.http.identity import Granting, ReadingAuditTrail, ReadingGrants
from shared.http.inputs import VISIBLE_ASCII
from shared.http.problems import responses
from shared.runtime import Rt

router = APIRouter(prefix="/access", tags=["access"])

UserId = Annotated[
    str, Field(min_length=1, max_length=128, pattern=VISIBLE_ASCII, description="The token subject (`sub`).")
]
Reason = Annotated[str, Field(min_length=1, max_length=500, description="Why (kept with the event).")]


class GrantRequest(ClientInput):
    user_id: UserId
    role: Role
    sites: tuple[Annotated[str, Field(pattern=r"^([A-Z0-9]{2,8}|\*)$")], ...] = Field(
        min_length=1, max_length=100, description="Site codes, e.g. ['01'], or ['*'] for every site."
    )
    reason: Reason


class RevokeRequest(ClientInput):
    user_id: UserId
    role: Role
    reason: Reason


class GrantRecorded(ClientInput):
    user_id: str
    role: str
    at: datetime
    by: str


@router.post(
    "/grants",
    status_code=201,
    summary="Grant a role at sites (study admin)",
    responses=responses(400, 401, 403, 409, 422, 503),
)
async def grant(rt: Rt, allowed: Granting, body: GrantRequest) -> GrantRecorded:
    at = await asyncio.to_thread(rt.access.grant, body.user_id, body.role, body.sites, body.reason, allowed.user_id)
    return GrantRecorded(user_id=body.user_id, role=body.role, at=at, by=allowed.user_id)


@router.post(
    "/revocations",
    status_code=201,
    summary="Revoke a role (study admin); effective at once",
    responses=responses(400, 401, 403, 404, 409, 422, 503),
)
async def revoke(rt: Rt, allowed: Granting, body: RevokeRequest) -> GrantRecorded:
    at = await asyncio.to_thread(rt.access.revoke, body.user_id, body.role, body.reason, allowed.user_id)
    return GrantRecorded(user_id=body.user_id, role=body.role, at=at, by=allowed.user_id)


@router.get("/grants", summary="The grants in force (study admin, auditor)", responses=responses(401, 403, 503))
async def list_grants(rt: Rt, allowed: ReadingGrants) -> list[dict[str, Any]]:
    return await grants.all_grants(rt.pool)


@router.get(
    "/grants/{user_id}/history",
    summary="Every grant and revocation of a person: who, when, why (study admin, auditor)",
    responses=responses(401, 403, 422, 503),
)
async def grant_history(
    rt: Rt, allowed: ReadingGrants, user_id: Annotated[str, Path(min_length=1, max_length=128, pattern=VISIBLE_ASCII)]
) -> list[dict[str, Any]]:
    return await asyncio.to_thread(rt.access.history, user_id)


@router.get(
    "/audit-reads",
    summary="Who read the audit trail or exported it, newest first (filtered to the sites you may see)",
    responses=responses(401, 403, 422, 503),
)
async def audit_reads(
    rt: Rt, allowed: ReadingAuditTrail, limit: Annotated[int, Query(ge=1, le=10_000)] = 1000
) -> list[dict[str, Any]]:
    return [r for r in await reads.recent_reads(rt.pool, limit) if allowed.sees(r["site_id"])]
