"""Commands racing for one subject: each is stored or refused with 409, never both, never twice, and
the protocol's rules still hold."""

from __future__ import annotations

import asyncio
from functools import partial

from faults_support import (
    Client,
    Ledger,
    assert_converged,
    concurrently,
    fault_stack,
    stored_events,
    wait_caught_up,
)
from support import at, enrolment

LYMPHODEPLETING = "UCT-26-001"
CONTESTED = "UCT-26-002"
LD_DAYS_AGO = list(range(14, 4, -1))  # ten different days, for a protocol that allows at most five


def test_racing_commands_are_stored_once_or_refused_with_409(servers, tmp_path):
    with fault_stack(servers, tmp_path) as stack:
        ledger = Ledger()
        client = Client(stack, ledger)
        assert client.enrol(LYMPHODEPLETING, days_ago=16).status == 201
        client.close()
        wait_caught_up(stack.database_url)  # treatment knows the enrolment

        def ld_day(days_ago: int, c: Client):
            return c.lymphodepletion(LYMPHODEPLETING, days_ago)

        def enrol(days_ago: int, c: Client):
            return c.send("enrollment", CONTESTED, "enrolment", "Enrolled", at(days_ago), enrolment(days_ago))

        answers = concurrently(
            stack,
            ledger,
            *(partial(ld_day, d) for d in LD_DAYS_AGO),
            *(partial(enrol, d) for d in (10, 9, 8, 7, 6, 5)),
            retry_for=0,
        )

        for answer in answers:
            assert answer.status in (201, 409), (answer.status, answer.body)
            if answer.status == 409:
                assert answer.body["status"] == 409 and answer.body["detail"]
        ld = [a for a in answers if a.subject_id == LYMPHODEPLETING]
        enrolments = [a for a in answers if a.subject_id == CONTESTED]
        assert 1 <= sum(a.status == 201 for a in ld) <= 5
        assert sum(a.status == 201 for a in enrolments) == 1
        ledger.assert_stored_exactly(stack.database_url, allowed=(201, 409))

        events = asyncio.run(stored_events(stack.database_url))
        days = [
            e.occurred_at.date()
            for e in sorted(events, key=lambda e: e.stream_version)
            if e.subject_id == LYMPHODEPLETING and e.event_type == "LymphodepletionGiven"
        ]
        assert days == sorted(set(days)) and len(days) <= 5  # in order, each day once, at most five
        assert sorted(d.isoformat() for d in days) == sorted(a.key for a in ld if a.status == 201)
        assert [e.event_type for e in events if e.subject_id == CONTESTED] == ["Enrolled"]

        models = assert_converged(stack.database_url)
        assert len(models["followup-journey"][LYMPHODEPLETING]["lymphodepletion_days"]) == len(days)
        assert models["treatment-subject-facts"][CONTESTED]["enrolled_on"].isoformat() == next(
            a.key for a in enrolments if a.status == 201
        )
