"""Who is reading: the hook the security issue turns into enforcement.

Reads of the audit trail (a subject's history and its exports) declare the roles allowed to make
them. Today the caller is identified by headers and the roles are not yet enforced; the security
issue replaces the headers with authenticated identities and refuses other roles with 403.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.http.inputs import Role, UserId

AUDIT_ROLES = frozenset({"auditor", "monitor", "data_manager", "investigator", "coordinator"})


@dataclass(frozen=True)
class Caller:
    user_id: str
    role: str

    @property
    def may_read_audit_trail(self) -> bool:
        return self.role in AUDIT_ROLES


def caller(x_user_id: UserId, x_user_role: Role) -> Caller:
    return Caller(x_user_id, x_user_role)
