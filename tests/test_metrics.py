"""`/metrics` after some traffic, parsed with prometheus-client's own parser, the values checked by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.open311_keys import add_key
from dispatch.queries import latest_seq
from tests.conftest import Demo, fire_due


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    # Timers are fired by hand here (fire_due), so the app's own sweep must not race the test.
    container.settings.timer_sweep_seconds = 3600
    with TestClient(create_app(container=container)) as c:
        yield c


def scrape(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": "demo1234"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def wait_for_hub(client: TestClient, container: Container) -> None:
    hub = client.app.state.hub  # type: ignore[attr-defined]
    end = time.monotonic() + 30
    while hub.last_seq < latest_seq(container.db) and time.monotonic() < end:
        hub.poke()
        time.sleep(0.02)


def test_metrics_after_traffic(
    client: TestClient, container: Container, demo: Demo, clock: FakeClock
) -> None:
    c = container
    dispatcher, grid = login(client, "dispatcher"), login(client, "grid")
    lon, lat = demo.point_in(demo.grid)
    body = {"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾"}
    ids = [client.post("/api/v1/reports", json=body, headers=dispatcher).json()["id"] for _ in range(3)]
    accepted = client.post(f"/api/v1/incidents/{ids[0]}/actions", json={"action": "accept"}, headers=grid)
    assert accepted.status_code == 200
    for iid in ids:
        assert client.get(f"/api/v1/incidents/{iid}", headers=dispatcher).status_code == 200
    assert client.get("/api/v1/incidents/360102-20000101-99999", headers=dispatcher).status_code == 404
    key = add_key(c.db, "hotline", "360102", clock.now())
    posted = client.post(
        "/open311/v2/requests.json",
        data={"api_key": key, "service_code": "municipal", "lat": lat, "long": lon},
    )
    assert posted.status_code == 201

    # A screen connected over WebSocket, and one registered straight with the hub that reads nothing, so
    # every later event it may see waits in its send queue.
    hub = client.app.state.hub  # type: ignore[attr-defined]
    with client.websocket_connect("/ws/events") as ws:
        ws.send_json({"token": dispatcher["Authorization"].split()[1], "since": None})
        assert ws.receive_json()["type"] == "welcome"
        stuck, subscribed_at = hub.subscribe(lambda event: True)

        # 31 minutes on: the ack clocks (30 min) of the three unaccepted cases and their yellow warnings
        # (80 % = 24 min) are due and not fired yet.
        clock.advance(timedelta(minutes=31))
        s = scrape(client)
        assert value(s, "griddispatch_timer_lag_seconds") == 7 * 60  # oldest unfired: the 24-minute warning
        assert value(s, "griddispatch_open_incidents", county="360102", light="red") == 3
        assert value(s, "griddispatch_open_incidents", county="360102", light="green") == 1  # accepted one
        assert value(s, "griddispatch_open_incidents", county="360102", light="yellow") == 0
        assert value(s, "griddispatch_reports_ingested_total", county="360102", source="hotline") == 3
        assert value(s, "griddispatch_reports_ingested_total", county="360102", source="open311") == 1
        assert value(s, "griddispatch_websocket_connections") == 2

        fire_due(c)  # the timers catch up: warnings, then escalation to the community
        wait_for_hub(client, c)
        s = scrape(client)
        assert value(s, "griddispatch_timer_lag_seconds") == 0
        assert (
            value(
                s, "griddispatch_escalations_total", county="360102", reason="ack_timeout", tier="community"
            )
            == 3
        )
        assert value(s, "griddispatch_escalations_total", county="360102", reason="urge", tier="grid") == 3
        assert value(s, "griddispatch_open_incidents", county="360102", light="red") == 0
        assert value(s, "griddispatch_event_seq") == latest_seq(c.db)
        assert value(s, "griddispatch_event_lag", consumer="hub") == 0
        waiting = latest_seq(c.db) - subscribed_at  # every event since it subscribed
        assert waiting > 0
        assert value(s, "griddispatch_websocket_send_queue_depth", stat="max") == waiting
        assert value(s, "griddispatch_websocket_send_queue_depth", stat="sum") >= waiting
        hub.unsubscribe(stuck)

    s = scrape(client)
    assert value(s, "griddispatch_websocket_connections") == 0
    # Latency histograms by route template (never the raw path with a case id in it).
    count = "griddispatch_http_request_duration_seconds_count"
    assert value(s, count, method="POST", route="/api/v1/reports", status="201") == 3
    assert value(s, count, method="GET", route="/api/v1/incidents/{incident_id}", status="200") == 3
    assert value(s, count, method="GET", route="/api/v1/incidents/{incident_id}", status="404") == 1
    assert value(s, count, method="POST", route="/open311/v2/requests.{fmt}", status="201") == 1
    assert value(s, count, method="POST", route="/api/v1/incidents/{incident_id}/actions", status="200") == 1
    inf = "griddispatch_http_request_duration_seconds_bucket"
    assert value(s, inf, method="POST", route="/api/v1/reports", status="201", le="+Inf") == 3
    assert not any(ids[0] in str(labels) for _, labels in s)
    assert value(s, "griddispatch_webhook_deliveries", status="dead") == 0


def test_every_response_carries_a_request_id(client: TestClient) -> None:
    echoed = client.get("/healthz", headers={"X-Request-Id": "trace-me-42"})
    assert echoed.headers["x-request-id"] == "trace-me-42"
    fresh = client.get("/healthz")
    assert len(fresh.headers["x-request-id"]) == 16
