"""Grants: which role a person (a token's subject) holds, and at which sites. Granting and revoking
are events in the `access` event store (who, when, why; hash-chained like every store), and the
current grants are a table written in the same transaction, so a revocation stops working at once.

Every service reads `access.grants` to authorise a request; the enrollment service hosts the store
and the admin API that writes it (`shared/http/grants.py`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import asyncpg
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import IntegrityError, OperationalError

from shared.access.policy import ALL_SITES, ROLES
from shared.errors import ConcurrentChange, InvalidCommand, NotFound, RuleViolation

SCHEMA = "access"
SITE = re.compile(r"^[A-Z0-9]{2,8}$")  # as in Enrolled.site_id
_PERSON_NAMESPACE = uuid5(NAMESPACE_URL, "urn:ucart:person")

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.grants (
    user_id text NOT NULL,
    role text NOT NULL,
    sites text[] NOT NULL,
    granted_by text NOT NULL,
    granted_at timestamptz NOT NULL,
    reason text NOT NULL,
    PRIMARY KEY (user_id, role)
);
"""


@dataclass(frozen=True)
class Grant:
    user_id: str
    role: str
    sites: tuple[str, ...]  # site codes, or ("*",) for every site

    def covers(self, site: str | None) -> bool:
        return ALL_SITES in self.sites or (site is not None and site in self.sites)


async def ensure_tables(pool: asyncpg.Pool, ddl: str) -> None:
    """Every service reads the grants (and logs audit reads), whichever starts first: create the
    tables once (a lock, because concurrent CREATE ... IF NOT EXISTS of one schema can still collide)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('ucart.access.ddl'))")
        await conn.execute(DDL + ddl)


async def open_store(pool: asyncpg.Pool, env: Mapping[str, str]) -> AccessStore:
    """The access store, its tables created by one process at a time (every service opens it, and
    concurrent CREATE TABLE of the same tables fail in PostgreSQL)."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock(hashtext('ucart.access.store'))")
        try:
            return await asyncio.to_thread(AccessStore, env)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext('ucart.access.store'))")


async def grants_of(pool: asyncpg.Pool, user_id: str) -> list[Grant]:
    rows = await pool.fetch(f"SELECT role, sites FROM {SCHEMA}.grants WHERE user_id = $1", user_id)
    return [Grant(user_id, r["role"], tuple(r["sites"])) for r in rows]


async def all_grants(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        f"SELECT user_id, role, sites, granted_by, granted_at, reason FROM {SCHEMA}.grants ORDER BY user_id, role"
    )
    return [dict(r) | {"sites": list(r["sites"])} for r in rows]


class Person(Aggregate):
    """One person's grants, as a stream of events (the eventsourcing library's own idiom: command
    methods check, `@event` methods only change state)."""

    @staticmethod
    def create_id(user_id: str) -> UUID:
        return person_id(user_id)  # one stream per person, found again from the token's subject

    @event("Registered")
    def __init__(self, user_id: str):
        self.user_id = user_id
        self.roles: dict[str, tuple[str, ...]] = {}

    @event("RoleGranted")
    def _grant(self, role: str, sites: tuple[str, ...], reason: str, by: str) -> None:
        self.roles[role] = tuple(sites)

    @event("RoleRevoked")
    def _revoke(self, role: str, reason: str, by: str) -> None:
        self.roles.pop(role, None)


def person_id(user_id: str) -> UUID:
    return uuid5(_PERSON_NAMESPACE, user_id)


class AccessStore(Application[UUID]):
    """The `access` event store (synchronous, like every eventsourcing application: use a thread)."""

    name = SCHEMA

    def __init__(self, env: Mapping[str, str] | None = None):
        super().__init__(dict(env or {}))

    def _person(self, user_id: str) -> Person | None:
        try:
            found: Person = self.repository.get(person_id(user_id))
        except AggregateNotFoundError:
            return None
        return found

    def grant(self, user_id: str, role: str, sites: tuple[str, ...], reason: str, by: str) -> datetime:
        if role not in ROLES:
            raise InvalidCommand(f"role {role!r} is not a study role; use one of: {', '.join(ROLES)}.")
        bad = [s for s in sites if s != ALL_SITES and not SITE.match(s)]
        if not sites or bad:
            raise InvalidCommand(
                f"sites must be site codes (2 to 8 capital letters or digits, e.g. 01) or {ALL_SITES!r} for "
                f"every site; got {list(sites)}."
            )
        person = self._person(user_id) or Person(user_id)
        if person.roles.get(role) == tuple(sites):
            raise RuleViolation(f"{user_id} already holds {role} at {', '.join(sites)}.")
        person._grant(role, tuple(sites), reason, by)
        granted_at = person.modified_on
        row = (
            f"""INSERT INTO {SCHEMA}.grants (user_id, role, sites, granted_by, granted_at, reason)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (user_id, role) DO UPDATE SET sites = EXCLUDED.sites, granted_by = EXCLUDED.granted_by,
                    granted_at = EXCLUDED.granted_at, reason = EXCLUDED.reason""",
            (user_id, role, list(sites), by, granted_at, reason),
        )
        self._save(person, row)  # the event and the current grant, in one transaction
        return granted_at

    def revoke(self, user_id: str, role: str, reason: str, by: str) -> datetime:
        person = self._person(user_id)
        if person is None or role not in person.roles:
            raise NotFound(f"{user_id} holds no {role} grant; list the grants with GET /access/grants.")
        person._revoke(role, reason, by)
        self._save(person, (f"DELETE FROM {SCHEMA}.grants WHERE user_id = %s AND role = %s", (user_id, role)))
        return person.modified_on

    def _save(self, person: Person, write: tuple[str, tuple[Any, ...]]) -> None:
        """Save the person's new event with its write to the grants table; a concurrent change of the
        same person (two admins, two services) is a 409 to retry, never a 500."""
        loaded_at = person.version - len(person.pending_events)
        concurrent = ConcurrentChange(f"The grants of {person.user_id} were changed at the same time; try again.")
        try:
            self.save(person, also=[write])
        except IntegrityError:
            raise concurrent from None
        except OperationalError:
            # As in SubjectApplication.commit: psycopg's pipeline may report the lost race this way.
            if self.recorder.select_events(person.id, gt=loaded_at, limit=1):
                raise concurrent from None
            raise

    def history(self, user_id: str) -> list[dict[str, Any]]:
        """Every grant and revocation of the person, oldest first: who, when, why."""
        person = self._person(user_id)
        if person is None:
            return []
        events = self.repository.event_store.get(person.id)
        return [
            {
                "event": type(e).__name__,
                "at": e.timestamp,
                **{k: v for k, v in vars(e).items() if k in ("role", "sites", "reason", "by")},
            }
            for e in events
            if isinstance(e, Aggregate.Event) and type(e).__name__ != "Registered"
        ]
