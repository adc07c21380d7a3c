"""Operations endpoints of the running services: liveness, readiness, Prometheus metrics."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from shared.contract.topics import SOURCES
from support import RunningStack, at, enrolment, eventually


def samples(stack: RunningStack, service: str) -> dict[tuple[str, tuple], float]:
    text = stack.get(service, "/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_every_service_is_alive_and_becomes_ready(stack: RunningStack):
    for service in SOURCES:
        assert stack.get(service, "/health").json() == {"status": "ok", "service": service}
        ready = eventually(lambda service=service: (r := stack.get(service, "/ready")).status_code == 200 and r.json())
        assert ready["status"] == "ready"
        assert ready["checks"] == {
            "database": "ok",
            "broker": "ok",
            "consumers": "ok",
            "relay": "ok",
            "lag": "ok",
            "parked": "ok",
            "topics": "ok",
        }


def test_metrics_show_relay_and_consumer_progress(stack: RunningStack):
    s = "UCT-06-401"
    assert stack.command("enrollment", f"/subjects/{s}/enrolment", at(2), enrolment(2)).status_code == 201

    def relay_caught_up():
        m = samples(stack, "enrollment")
        return m[("ucart_relay_lag_events", (("service", "enrollment"),))] == 0 and m

    enrollment = eventually(relay_caught_up)
    service = (("service", "enrollment"),)
    assert enrollment[("ucart_relay_published_total", service)] >= 1
    assert enrollment[("ucart_relay_errors_total", service)] >= 0
    assert enrollment[("ucart_relay_republished_total", service)] >= 0
    assert enrollment[("ucart_relay_failing_seconds", service)] == 0

    def journey_applied():
        m = samples(stack, "followup")
        key = ("ucart_consumer_messages_total", (("consumer", "followup-journey"), ("outcome", "applied")))
        return m.get(key, 0) >= 1 and m

    followup = eventually(journey_applied)
    lags = [v for (name, _), v in followup.items() if name == "ucart_consumer_lag_messages"]
    assert lags and all(v >= 0 for v in lags)
