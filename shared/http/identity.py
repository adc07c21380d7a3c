"""Who is calling, and what they may do: the one dependency every route goes through.

`permit(action)` verifies the bearer token (`shared/access/tokens.py`), reads the caller's grants
(`shared/access/grants.py`) and asks the policy (`shared/access/policy.py`) where the caller may take
the action. The route receives a `Permit`: it filters lists with `sees(site)`, answers 404 for a
subject of another site (`require(site)`), and attributes what it records with `recorded_by(site)`.
No header a client sets is read for identity; nothing a client sends can act as the rules' `system`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared import db
from shared.access import grants
from shared.access.policy import ALL_SITES, Action, scope
from shared.access.tokens import InvalidToken
from shared.contract.envelope import RecordedBy
from shared.errors import Forbidden, SubjectNotFound, Unauthenticated
from shared.runtime import Rt, Runtime

log = logging.getLogger(__name__)

# Documents the scheme in OpenAPI; the token itself is checked below (auto_error would answer 403).
bearer = HTTPBearer(auto_error=False, description="An access token from the study's OIDC issuer.")


@dataclass(frozen=True)
class Permit:
    """What the caller may touch for one action: every site, or the sites of their grants."""

    user_id: str
    action: Action
    roles_by_site: dict[str, str]  # site (or "*") -> the role that allows the action there
    all_sites: bool

    def sees(self, site: str | None) -> bool:
        return self.all_sites or ALL_SITES in self.roles_by_site or (site is not None and site in self.roles_by_site)

    def require(self, subject_id: str, site: str | None, *, retryable: bool = False) -> None:
        """A subject at a site the caller may not see does not exist for them (404, not 403)."""
        if not self.sees(site):
            raise SubjectNotFound(
                f"No subject {subject_id} at your sites: check the study code"
                + ("; if it was just enrolled, retry in a few seconds." if retryable else "."),
                retryable=retryable,
            )

    def role_at(self, site: str | None) -> str:
        for key in (site, ALL_SITES):
            if key is not None and key in self.roles_by_site:
                return self.roles_by_site[key]
        return next(iter(self.roles_by_site.values()))

    def recorded_by(self, site: str | None) -> RecordedBy:
        return RecordedBy(user_id=self.user_id, role=self.role_at(site), site_id=site)


def bearer_token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The token of an `Authorization: Bearer` header (None for none or another scheme)."""
    return credentials.credentials if credentials is not None and credentials.scheme.lower() == "bearer" else None


async def authenticate(rt: Runtime, token: str | None) -> tuple[str, list[grants.Grant]]:
    if not token:
        raise Unauthenticated("Send an access token: Authorization: Bearer <token> (see README, Logging in).")
    try:
        claims = rt.tokens.verify(token)
    except InvalidToken as exc:
        raise Unauthenticated(f"The access token was refused: {exc}.") from None
    held = await db.answered(grants.grants_of(rt.pool, claims.subject))  # a 503 at once if PostgreSQL is down
    if claims.subject in rt.settings.study_admins:  # the first admin, before any grant exists
        held.append(grants.Grant(claims.subject, "study_admin", (ALL_SITES,)))
    return claims.subject, held


async def permit_for(rt: Runtime, token: str | None, action: Action) -> Permit:
    """Where the bearer of `token` may take `action`: the API's bearer tokens and the dashboard's session
    cookie both come here, so both obey the one policy."""
    user_id, held = await authenticate(rt, token)
    roles_by_site: dict[str, str] = {}
    all_sites = False
    for grant in held:
        where = scope(grant.role, action)
        if where == "all":
            all_sites = True
            roles_by_site.setdefault(ALL_SITES, grant.role)
        elif where == "sites":
            for site in grant.sites:
                roles_by_site.setdefault(site, grant.role)
    if not roles_by_site:
        roles = ", ".join(sorted({g.role for g in held})) or "none"
        raise Forbidden(
            f"Your grants (roles: {roles}) do not allow {action.value.replace('_', ' ')}; ask the study admin "
            "for a grant if you need it."
        )
    return Permit(user_id, action, roles_by_site, all_sites)


def permit(action: Action) -> Callable[..., Coroutine[Any, Any, Permit]]:
    async def check(rt: Rt, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Permit:
        return await permit_for(rt, bearer_token(credentials), action)

    check.__name__ = f"permit_{action.value}"
    return check


# A handler's parameter typed with one of these receives the caller's permit for that action.
Reading = Annotated[Permit, Depends(permit(Action.READ))]
ReadingTables = Annotated[Permit, Depends(permit(Action.STUDY_TABLES))]
ReadingAuditTrail = Annotated[Permit, Depends(permit(Action.AUDIT_TRAIL))]
Granting = Annotated[Permit, Depends(permit(Action.GRANT_ROLES))]
ReadingGrants = Annotated[Permit, Depends(permit(Action.READ_GRANTS))]
