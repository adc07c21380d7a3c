"""The demo's people and their grants, and tokens for them from the local issuer.

Grants go through the access event store like any other (`shared/access/grants.py`), recorded by the
operator's tooling with the reason; the study admin comes from configuration (UCART_STUDY_ADMINS).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from infra.issuer import Issuer
from shared.access import grants
from shared.access.policy import ALL_SITES
from shared.config import Settings
from shared.errors import RuleViolation
from shared.eventstore.application import postgres_env

STUDY_ADMIN = "study-admin"
SEEDER = "demo-seeder"  # enters the demo cohort: site staff everywhere, and closes the queries it opens
GRANTED_BY = "ucart-setup"


@dataclass(frozen=True)
class Person:
    user_id: str
    role: str
    sites: tuple[str, ...]
    who: str  # for the printed list


def demo_people(sites: tuple[str, ...]) -> list[Person]:
    people = [Person(f"coordinator-{s}", "coordinator", (s,), f"coordinator, site {s}") for s in sites]
    people += [Person(f"investigator-{s}", "investigator", (s,), f"investigator, site {s}") for s in sites]
    everywhere = (ALL_SITES,)
    people += [
        Person("monitor", "monitor", sites, "monitor, sites " + ", ".join(sites)),
        Person("data-manager", "data_manager", everywhere, "data manager"),
        Person("safety-officer", "safety_officer", everywhere, "safety officer"),
        Person("sponsor", "sponsor", everywhere, "sponsor (study tables only)"),
        Person("auditor", "auditor", everywhere, "auditor"),
        Person(SEEDER, "investigator", everywhere, "the demo's data entry"),
        Person(SEEDER, "data_manager", everywhere, "the demo's data entry"),
    ]
    return people


def grant_all(database_url: str, people: list[Person], reason: str) -> None:
    """Record each grant not yet held (synchronous: the access store is an eventsourcing application)."""
    store = grants.AccessStore(postgres_env(database_url, grants.SCHEMA) | {"POSTGRES_POOL_SIZE": "1"})
    try:
        for person in people:
            with contextlib.suppress(RuleViolation):  # already held, as asked
                store.grant(person.user_id, person.role, person.sites, reason, GRANTED_BY)
    finally:
        store.close()


async def ensure_access_tables(database_url: str) -> None:
    from shared import db
    from shared.access import reads

    pool = await db.create_pool(database_url)
    try:
        await grants.ensure_tables(pool, reads.DDL)
    finally:
        await pool.close()


def prepare(settings: Settings, database_url: str, people: list[Person], reason: str) -> Issuer:
    """The issuer's keys, the access tables, and the grants of `people`."""
    issuer = Issuer.of(settings)
    asyncio.run(ensure_access_tables(database_url))
    grant_all(database_url, people, reason)
    return issuer
