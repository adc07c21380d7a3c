"""PostgreSQL stopped under running services: commands answer 503 (retryable) and store nothing;
readiness names the database; once it is back, the services recover by themselves and converge."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from faults_support import (
    SOURCES,
    Client,
    Ledger,
    assert_converged,
    concurrently,
    event_counts,
    fault_stack,
    journeys,
    own_postgres,
    wait_caught_up,
)
from support import FLU_CY, at, enrolment, eventually

LYMPHODEPLETING, INFUSED, NEW = "UCT-24-001", "UCT-24-002", "UCT-24-003"


def test_postgres_outage_answers_503_stores_nothing_and_recovers(servers, tmp_path):
    with own_postgres(tmp_path) as (postgres, url), fault_stack(servers, tmp_path, database_url=url) as stack:
        ledger = Ledger()
        journeys(stack, ledger, [INFUSED], aes=1, visits=())
        client = Client(stack, ledger)
        client.enrol(LYMPHODEPLETING)
        for day in (8, 7, 6):
            client.lymphodepletion(LYMPHODEPLETING, day)
        client.close()
        assert ledger.count(201) == len(ledger.sent) == 10
        wait_caught_up(url)
        before = event_counts(url)

        postgres.stop()
        refused = concurrently(
            stack,
            ledger,
            lambda c: c.enrol(NEW),
            lambda c: c.lymphodepletion(LYMPHODEPLETING, 5),
            lambda c: c.adverse_event(INFUSED),
            lambda c: c.visit(INFUSED, "D1"),
            retry_for=0,
        )
        for answer in refused:
            assert answer.status == 503, (answer.service, answer.status, answer.body)
            assert answer.body["retryable"] is True and answer.body["status"] == 503
            assert "nothing was stored" in answer.body["detail"].lower()
        for service in SOURCES:
            ready = stack.get(service, "/ready")
            assert ready.status_code == 503, ready.text
            assert ready.json()["checks"]["database"] != "ok" and ready.json()["status"] == "not ready"

        postgres.start()  # same data directory, same socket
        assert event_counts(url) == before, "a refused command left something behind"
        # The connection pools recover by themselves: the same commands, resent, are stored once.
        client = Client(stack, ledger, retry_for=30)
        try:
            assert client.enrol(NEW).status == 201
            assert client.lymphodepletion(LYMPHODEPLETING, 5).status == 201
            assert client.adverse_event(INFUSED).status == 201
            assert client.visit(INFUSED, "D1").status == 201
            client.infuse(LYMPHODEPLETING)
            client.journey(NEW, enrol=False, aes=0, visits=())
        finally:
            client.close()
        assert ledger.count(201) == len(ledger.sent) - len(refused)
        ledger.assert_stored_exactly(url, allowed=(201, 503))  # each refused command stored nothing
        for service in SOURCES:
            eventually(lambda service=service: stack.get(service, "/ready").status_code == 200, timeout=30)

        models = assert_converged(url)
        journey = models["followup-journey"]
        assert set(journey) == {LYMPHODEPLETING, INFUSED, NEW}
        assert len(journey[LYMPHODEPLETING]["lymphodepletion_days"]) == 4 and journey[LYMPHODEPLETING]["infused_at"]
        assert list(journey[INFUSED]["visits_completed"]) == ["D1"] and len(journey[INFUSED]["adverse_events"]) == 2
        assert journey[NEW]["infused_at"] and models["followup-subject-facts"][NEW]["infused_on"]


FAST_503, BACK_WITHIN = 1.0, 2.0  # seconds
OUTAGE = 8.0  # long enough for connection pools to back off between reconnection attempts


def test_each_service_fails_fast_and_serves_again_soon_after_postgres_returns(servers, tmp_path):
    with own_postgres(tmp_path) as (postgres, url), fault_stack(servers, tmp_path, database_url=url) as stack:
        ledger = Ledger()
        journeys(stack, ledger, ["UCT-24-101"], aes=0, visits=())
        client = Client(stack, ledger)
        client.enrol("UCT-24-102")
        client.close()
        wait_caught_up(url)
        # One command per service that PostgreSQL's return makes succeed again.
        commands = {
            "enrollment": ("/subjects/UCT-24-103/enrolment", at(2), enrolment(2)),
            "treatment": ("/subjects/UCT-24-102/lymphodepletion-days", at(8), FLU_CY),
            "followup": ("/subjects/UCT-24-101/visits", at(2), {"visit_code": "D1"}),
        }

        def send(service: str) -> tuple[int, float]:
            path, occurred_at, payload = commands[service]
            started = time.monotonic()
            response = stack.command(service, path, occurred_at, payload)
            return response.status_code, time.monotonic() - started

        postgres.stop()
        outage_ends = time.monotonic() + OUTAGE
        while time.monotonic() < outage_ends:
            for service in SOURCES:
                status, took = send(service)
                assert status == 503 and took < FAST_503, (service, status, round(took, 2))
            time.sleep(0.5)

        postgres.start()
        back = time.monotonic()

        def serves_again(service: str) -> float:
            while (status := send(service)[0]) == 503 and time.monotonic() - back < 30:
                time.sleep(0.05)
            assert status == 201, (service, status)
            return time.monotonic() - back

        with ThreadPoolExecutor(3) as pool:
            recovered = dict(zip(SOURCES, pool.map(serves_again, SOURCES), strict=True))
        assert all(seconds < BACK_WITHIN for seconds in recovered.values()), recovered
        assert_converged(url)
