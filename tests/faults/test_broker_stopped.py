"""The broker killed while the services run: commands still succeed (the write side needs only
PostgreSQL); the broker comes back empty on the same port and everything converges."""

from __future__ import annotations

import asyncio

from faults_support import (
    SOURCES,
    Client,
    Ledger,
    assert_converged,
    fault_stack,
    journeys,
    metrics,
    own_broker,
    stored_events,
    wait_caught_up,
)
from support import at, enrolment, eventually

BEFORE = [f"UCT-22-{n:03d}" for n in range(1, 4)]
DURING = [f"UCT-22-{n:03d}" for n in range(11, 15)]


def test_commands_succeed_while_the_broker_is_down_and_nothing_is_lost(servers, tmp_path):
    with own_broker(tmp_path) as broker, fault_stack(servers, tmp_path, bootstrap=broker.bootstrap_servers) as stack:
        ledger = Ledger()
        journeys(stack, ledger, BEFORE, aes=0, visits=())
        assert ledger.count(201) == len(ledger.sent)

        wait_caught_up(stack.database_url)  # every service knows BEFORE's subjects
        broker.kill()
        stored_before = {e.event_id for e in asyncio.run(stored_events(stack.database_url))}
        published_before = {s: metrics(stack, s)[("ucart_relay_published_total", (("service", s),))] for s in SOURCES}
        client = Client(stack, ledger, retry_for=0)  # no second chance: each must succeed at once
        try:
            # These commands need nothing from Kafka.
            for s in BEFORE:
                client.adverse_event(s)
                client.visit(s, "D1")
            for s in DURING:
                client.send("enrollment", s, "enrolment", "Enrolled", at(12), enrolment(12))
        finally:
            client.close()
        assert ledger.count(201) == len(ledger.sent), [x.body for x in ledger.sent if x.status != 201]

        broker.start()  # same port: Tansu comes back empty, Apache Kafka recovers its log from disk
        # The subjects enrolled while the broker was down go on to treatment and follow-up.
        journeys(stack, ledger, DURING, enrol=False)
        assert ledger.count(201) == len(ledger.sent), [x.body for x in ledger.sent if x.status != 201]
        ledger.assert_stored_exactly(stack.database_url, allowed=(201,))

        models = assert_converged(stack.database_url)
        assert set(models["followup-journey"]) == set(models["treatment-subject-facts"]) == set(BEFORE + DURING)
        for journey in models["followup-journey"].values():
            assert len(journey["adverse_events"]) == 1 and list(journey["visits_completed"]) == ["D1"]
            assert len(journey["lymphodepletion_days"]) == 3 and journey["infused_at"]
        # Kafka itself is in use again, not only the reconciliation under it.
        for service in SOURCES:
            eventually(lambda service=service: stack.get(service, "/ready").status_code == 200, timeout=30)
        # The outbox kept what the broker could not take: every event stored since the broker died was
        # published to the new one, which acknowledged it (each relay's position is past it: no lag).
        since = [e for e in asyncio.run(stored_events(stack.database_url)) if e.event_id not in stored_before]
        for source in SOURCES:
            # (a relay may still be in its back-off from the outage: give it the time to drain)
            relay = eventually(
                lambda source=source: (
                    (m := metrics(stack, source))[("ucart_relay_lag_events", (("service", source),))] == 0 and m
                )
            )
            published = relay[("ucart_relay_published_total", (("service", source),))]
            assert published - published_before[source] >= sum(e.source == source for e in since), source
