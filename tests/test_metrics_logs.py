"""Structured JSON logs: one request id follows a case through HTTP, a timer firing and a webhook delivery;
phone numbers and secrets never reach the log."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from dispatch import webhooks as wh
from dispatch.bootstrap import Container
from dispatch.clock import FakeClock
from dispatch.logs import JsonFormatter, redact
from dispatch.queries import pending_deadlines
from tests.conftest import Demo
from tests.webhook_receiver import Receiver


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.lines.append(json.loads(self.format(record)))

    def about(self, incident_id: str) -> list[dict[str, Any]]:
        with self.guard:
            return [line for line in self.lines if line.get("incident_id") == incident_id]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old)


def test_redaction() -> None:
    text = (
        "call 13812341234 or 0791-86281234; Authorization: Bearer abc.def-ghi; "
        "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig_nature; ?api_key=o311_secretkey&x=1 password=hunter22"
    )
    out = redact(text)
    for secret in ("13812341234", "86281234", "abc.def-ghi", "eyJhbGci", "o311_secretkey", "hunter22"):
        assert secret not in out
    assert "138****1234" in out


def test_one_case_through_http_timer_and_webhook(
    container: Container, demo: Demo, clock: FakeClock, lines: Lines
) -> None:
    c = container
    c.settings.timer_sweep_seconds = 3600
    c.settings.webhook_poll_seconds = 0.05
    receiver = Receiver()
    try:
        with TestClient(create_app(container=c)) as client:
            wh.add_subscription(c.db, receiver.url, "test", ["incident.escalated"])
            token = client.post("/api/v1/auth/token", data={"username": "dispatcher", "password": "demo1234"})
            jwt = token.json()["access_token"]
            headers = {"Authorization": f"Bearer {jwt}", "X-Request-Id": "hotline-call-7"}
            lon, lat = demo.point_in(demo.grid)
            report = {
                "lon": lon,
                "lat": lat,
                "category": "sanitation",
                "description": "垃圾，来电人 13812341234",
                "reporter": {"name": "王五", "phone": "13812341234"},
            }
            iid = client.post("/api/v1/reports", json=report, headers=headers).json()["id"]
            assert client.get(f"/api/v1/incidents/{iid}", headers=headers).status_code == 200

            # The ack clock runs out; the timer runner fires it (as its scheduler would).
            clock.advance(timedelta(minutes=31))
            timers = client.app.state.timers  # type: ignore[attr-defined]
            for deadline_id, due in pending_deadlines(c.db, clock.now()):
                client.portal.call(timers.fire, deadline_id, due)  # type: ignore[union-attr]

            end = time.monotonic() + 30
            while not any(line.get("logger") == "dispatch.webhooks" for line in lines.about(iid)):
                assert time.monotonic() < end, "no webhook delivery logged"
                time.sleep(0.05)
    finally:
        receiver.close()

    about = lines.about(iid)
    http = [line for line in about if line["logger"] == "griddispatch.http"]
    assert {line["request_id"] for line in http} == {"hotline-call-7"}
    assert [line["route"] for line in http] == ["/api/v1/reports", "/api/v1/incidents/{incident_id}"]
    timer = [line for line in about if line["request_id"].startswith("timer-")]
    assert timer and timer[0]["message"].startswith("deadline")
    hook = [line for line in about if line["logger"] == "dispatch.webhooks"]
    assert hook[0]["request_id"].startswith("wh-") and hook[0]["status_code"] == 200
    assert receiver.received[0].headers["X-Request-Id"] == hook[0]["request_id"]
    everything = json.dumps(lines.lines, ensure_ascii=False)
    assert "13812341234" not in everything and jwt not in everything
