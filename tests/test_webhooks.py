"""Webhooks end to end: a real `griddispatch serve`, a real HTTP receiver on 127.0.0.1 that fails the first two
deliveries; the third succeeds, the signature verifies, and the delivery log shows all three attempts."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch.webhooks import verify
from tests.server import Api, ServerProcess
from tests.webhook_receiver import Receiver

pytestmark = pytest.mark.e2e
SECRET = "s3cret-for-the-test-receiver"


def eventually(check: Callable[[], Any], what: str, limit: float = 60) -> Any:
    """Poll until `check` returns something truthy (a generous limit; no timing is asserted)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        data_dir,
        webhook_backoff_seconds=0.05,
        webhook_poll_seconds=0.1,
        webhook_max_attempts=5,
        webhook_allowed_hosts="127.0.0.1",  # tests only ever talk to loopback
    ).start()
    yield proc
    proc.stop()


def point_in_demo_grid(api: Api) -> tuple[float, float]:
    grid = api.get("dispatcher", "/grids", level="grid").json()["features"][0]
    ring = grid["geometry"]["coordinates"][0]
    while isinstance(ring[0][0], list):  # MultiPolygon
        ring = ring[0]
    import shapely

    p = shapely.Polygon(ring).representative_point()
    return p.x, p.y


def test_two_failures_then_success_signed_and_logged(server: ServerProcess) -> None:
    receiver = Receiver(answers=[500, 503])
    try:
        api = Api(server.url)
        r = api.http.post(
            "/webhooks",
            json={"url": receiver.url, "events": ["incident.created"], "secret": SECRET},
            headers=api.headers("admin"),
        )
        assert r.status_code == 201, r.text
        sub = r.json()
        assert sub["secret"] == SECRET and sub["jurisdiction"] == "360102"

        lon, lat = point_in_demo_grid(api)
        created = api.report(
            "dispatcher",
            {
                "lon": lon,
                "lat": lat,
                "category": "sanitation",
                "description": "垃圾",
                "reporter": {"phone": "13800001111"},
            },
        )
        assert created.status_code == 201
        case = created.json()["id"]

        def delivered() -> list[dict[str, Any]] | None:
            items = api.get("admin", f"/webhooks/{sub['id']}/deliveries").json()["items"]
            return items if items and items[0]["status"] == "delivered" else None

        (delivery,) = eventually(delivered, "the third attempt to succeed")
        assert delivery["incident_id"] == case and delivery["event_type"] == "incident.created"
        assert delivery["attempts"] == 3
        assert [a["attempt"] for a in delivery["log"]] == [1, 2, 3]
        assert [a["status_code"] for a in delivery["log"]] == [500, 503, 200]
        assert all(a["request_id"] for a in delivery["log"])

        assert len(receiver.received) == 3
        bodies = {r.body for r in receiver.received}
        assert len(bodies) == 1  # the same event every time; only the attempt header and signature differ
        assert [r.headers["X-GridDispatch-Attempt"] for r in receiver.received] == ["1", "2", "3"]
        last = receiver.received[-1]
        ts = int(last.headers["X-GridDispatch-Timestamp"])
        signature = last.headers["X-GridDispatch-Signature"]
        # The receiver's side, computed here by hand from the documented scheme …
        expected = hmac.new(SECRET.encode(), f"{ts}.".encode() + last.body, hashlib.sha256).hexdigest()
        assert signature == f"v1={expected}"
        # … and with the helper we ship for receivers; a tampered body or wrong secret fails.
        assert verify(SECRET, ts, last.body, signature)
        assert not verify(SECRET, ts, last.body.replace(b"sanitation", b"sanitatioN"), signature)
        assert not verify("another-secret-entirely", ts, last.body, signature)

        event = json.loads(last.body)
        assert event["type"] == "incident.created" and event["incident_id"] == case
        assert event["jurisdiction"][0] == "360102"
        assert event["webhook"] == {"subscription_id": sub["id"], "delivery_id": delivery["id"]}
        assert last.headers["X-GridDispatch-Delivery"] == str(delivery["id"])
        assert b"13800001111" not in last.body  # the reporter's phone never leaves in an event
    finally:
        receiver.close()


def test_webhooks_are_admin_only_and_scoped(server: ServerProcess) -> None:
    api = Api(server.url)
    body = {"url": "http://127.0.0.1:9/hook"}
    assert api.http.post("/webhooks", json=body, headers=api.headers("dispatcher")).status_code == 403
    other = api.http.post("/webhooks", json={**body, "jurisdiction": "360103"}, headers=api.headers("admin"))
    assert other.status_code == 403
    bad = api.http.post("/webhooks", json={"url": "not a url"}, headers=api.headers("admin"))
    assert bad.status_code == 422
    outside = api.http.post(
        "/webhooks", json={"url": "https://example.org/hook"}, headers=api.headers("admin")
    )
    assert outside.status_code == 422 and outside.json()["code"] == "host_not_allowed"
    made = api.http.post("/webhooks", json=body, headers=api.headers("admin")).json()
    listed = api.get("admin", "/webhooks").json()
    assert [s["id"] for s in listed] == [made["id"]] and "secret" not in listed[0]
    gone = api.http.delete(f"/webhooks/{made['id']}", headers=api.headers("admin"))
    assert gone.json() == {"id": made["id"], "active": False}
