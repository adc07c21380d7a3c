"""The demo's people and their grants, and tokens and passwords for them from the local issuer.

Grants go through the access event store like any other (`shared/access/grants.py`), recorded by the
operator's tooling with the reason; the study admin comes from configuration (UCART_STUDY_ADMINS).
Each person gets a password to log in to the dashboard with: the issuer keeps its hash, and the demo
keeps it in clear in `demo-passwords.json` beside the issuer's files (owner-only), so that it can show
the same passwords on every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from infra.issuer import Issuer, write_private
from shared.access import grants
from shared.access.policy import ALL_SITES
from shared.config import Settings
from shared.errors import RuleViolation
from shared.eventstore.application import postgres_env

STUDY_ADMIN = "study-admin"
SEEDER = "demo-seeder"  # enters the demo cohort: site staff everywhere, and closes the queries it opens
GRANTED_BY = "ucart-setup"
DEMO_PASSWORDS = "demo-passwords.json"  # in the issuer's directory, beside demo-tokens.json


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
    """The issuer's keys, the access tables, the grants of `people`, and a password for each of them who
    has none yet (`demo_passwords` gives them)."""
    issuer = Issuer.of(settings)
    asyncio.run(ensure_access_tables(database_url))
    grant_all(database_url, people, reason)
    ensure_passwords(issuer, people)
    return issuer


def ensure_passwords(issuer: Issuer, people: Iterable[Person]) -> dict[str, str]:
    """A new password for each person (not the seeder, which is no person) whose demo password is not
    kept yet or no longer works; the others keep theirs. Returns every kept demo password, by user."""
    kept = demo_passwords(issuer)
    new = {
        user_id: issuer.register_user(user_id)
        for user_id in dict.fromkeys(person.user_id for person in people if person.user_id != SEEDER)
        if user_id not in kept or not issuer.check_password(user_id, kept[user_id])
    }
    if new:
        write_private(issuer.directory / DEMO_PASSWORDS, json.dumps(kept | new, indent=2))
    return kept | new


def demo_passwords(issuer: Issuer) -> dict[str, str]:
    """The demo passwords kept in clear, by user (none before `ensure_passwords`)."""
    file = issuer.directory / DEMO_PASSWORDS
    passwords: dict[str, str] = json.loads(file.read_text()) if file.exists() else {}
    return passwords
