"""The study's access policy, in one table (DOMAIN.md, "Who may do what", as in OpenClinica and
REDCap): for each action, the roles that may take it and where.

`"sites"`: at the sites of the person's grant ("own sites" of site staff, "assigned sites" of a
monitor, "per grant" of a service account); `"all"`: at every site. A role absent from an action's
row may not take it. Pure data and two questions; one FastAPI dependency enforces it on every route
(`shared/http/identity.py`), and the tests generate their matrix from it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

Role = Literal[
    "coordinator",
    "investigator",
    "monitor",
    "data_manager",
    "safety_officer",
    "sponsor",
    "auditor",
    "service",
    "study_admin",
]
ROLES: tuple[Role, ...] = get_args(Role)
Scope = Literal["sites", "all"]

# The identity of the rules engine in the events it records itself; no grant may claim it.
SYSTEM_ROLE = "system"


class Action(StrEnum):
    READ = "read"  # subjects, journeys, schedules, visits, queries and report clocks
    RECORD = "record"  # enrol, lymphodepletion, infusion, visits, samples, responses, leaving the study
    REPORT_AE = "report_ae"  # report or update an adverse event
    CORRECT = "correct"  # a correction, with its reason
    ANSWER_QUERY = "answer_query"
    CLOSE_QUERY = "close_query"
    SUBMIT_SAFETY_REPORT = "submit_safety_report"
    STUDY_TABLES = "study_tables"  # aggregates: safety and efficacy tables
    AUDIT_TRAIL = "audit_trail"  # a subject's history and its exports, the log of such reads
    GRANT_ROLES = "grant_roles"  # grant and revoke roles
    READ_GRANTS = "read_grants"  # the grants and their history (role changes are audited too)


SITE_STAFF: dict[Role, Scope] = {"coordinator": "sites", "investigator": "sites"}

POLICY: dict[Action, dict[Role, Scope]] = {
    Action.READ: {
        **SITE_STAFF,
        "monitor": "sites",
        "data_manager": "all",
        "safety_officer": "all",
        "auditor": "all",
        "service": "sites",
    },
    Action.RECORD: SITE_STAFF,
    Action.REPORT_AE: SITE_STAFF,
    Action.CORRECT: SITE_STAFF,
    Action.ANSWER_QUERY: SITE_STAFF,
    # The safety officer closes queries on adverse events: every query the rules open is on one.
    Action.CLOSE_QUERY: {"monitor": "sites", "data_manager": "all", "safety_officer": "all"},
    Action.SUBMIT_SAFETY_REPORT: {"investigator": "sites", "safety_officer": "all"},
    Action.STUDY_TABLES: {
        "investigator": "sites",
        "data_manager": "all",
        "safety_officer": "all",
        "sponsor": "all",
        "auditor": "all",
        "service": "sites",
    },
    Action.AUDIT_TRAIL: {
        **SITE_STAFF,
        "monitor": "sites",
        "data_manager": "all",
        "safety_officer": "all",
        "auditor": "all",
    },
    Action.GRANT_ROLES: {"study_admin": "all"},
    Action.READ_GRANTS: {"study_admin": "all", "auditor": "all"},
}

ALL_SITES = "*"  # in a grant's sites: every site (a service account, a study-wide role)


def scope(role: str, action: Action) -> Scope | None:
    """Where `role` may take `action`: "sites", "all", or None (not at all)."""
    for granted, where in POLICY[action].items():
        if granted == role:
            return where
    return None
