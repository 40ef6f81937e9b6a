"""The webhook pipeline piece by piece, on both backends: fan-out from the outbox without skips or doubles,
filters, leases that make each attempt happen once, backoff, dead letters, replay, and a slow receiver that
never holds up dispatch."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from dispatch import models as m
from dispatch import webhooks as wh
from dispatch.bootstrap import Container
from tests.conftest import Demo
from tests.webhook_receiver import Receiver


def deliveries(c: Container) -> list[m.WebhookDelivery]:
    with c.db.read() as s:
        return list(s.execute(select(m.WebhookDelivery).order_by(m.WebhookDelivery.event_seq)).scalars())


def failed(job: wh.Job) -> wh.Result:
    return wh.Result(500, None, 1.0, f"test-{job.delivery_id}-{job.attempt}")


def test_fan_out_follows_the_outbox_once_with_filters(container: Container, demo: Demo) -> None:
    c = container
    before = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    everything = wh.add_subscription(c.db, "http://127.0.0.1:9/a", "t")
    created_only = wh.add_subscription(c.db, "http://127.0.0.1:9/b", "t", ["incident.created"])
    grid2_only = wh.add_subscription(c.db, "http://127.0.0.1:9/c", "t", ["incident.*"], demo.grid2)
    a = c.service.submit_report(demo.report(), demo.actor("dispatcher"))["id"]
    b = c.service.submit_report(demo.report(demo.grid2), demo.actor("dispatcher"))["id"]
    c.service.act(b, wh_command("call_community"), demo.actor("grid2"))

    made = wh.fan_out(c.db)
    assert wh.fan_out(c.db) == 0  # a second pass (or a second process) finds nothing new
    rows = deliveries(c)
    assert len(rows) == made
    by_sub: dict[int, list[tuple[str, str | None]]] = {}
    for d in rows:
        by_sub.setdefault(d.subscription_id, []).append((d.event_type, d.incident_id))
    assert before not in {i for _, i in by_sub[everything.id]}  # subscribed after it: not sent
    assert {i for _, i in by_sub[everything.id]} == {a, b}
    assert by_sub[created_only.id] == [("incident.created", a), ("incident.created", b)]
    assert {i for _, i in by_sub[grid2_only.id]} == {b}
    assert ("incident.escalated", b) in by_sub[grid2_only.id]
    latest = max(d.event_seq for d in rows)
    assert {s.cursor for s in wh.subscriptions(c.db)} == {latest}


def wh_command(action: str) -> Any:
    from dispatch.domain import Command

    return Command(action)


def test_a_claimed_delivery_is_attempted_by_one_worker_then_retried_with_backoff(
    container: Container, demo: Demo
) -> None:
    c = container
    wh.add_subscription(c.db, "http://127.0.0.1:9/a", "t", ["incident.created"])
    c.service.submit_report(demo.report(), demo.actor("dispatcher"))
    wh.fan_out(c.db)
    (job,) = wh.claim(c.db, "worker-a", lease_seconds=60, limit=10)
    assert job.attempt == 1
    assert wh.claim(c.db, "worker-b", lease_seconds=60, limit=10) == []  # leased to worker-a
    status = wh.record(c.db, job, failed(job), max_attempts=3, base=3600, cap=3600)
    assert status == "pending"
    (row,) = deliveries(c)
    assert row.claimed_by is None and row.last_error == "HTTP 500"
    assert wh.claim(c.db, "worker-b", lease_seconds=60, limit=10) == []  # backing off for an hour
    assert [wh.backoff(n, 5, 60) for n in range(1, 6)] == [5, 10, 20, 40, 60]


def test_dead_letter_after_the_last_attempt_and_replay(container: Container, demo: Demo) -> None:
    c = container
    sub = wh.add_subscription(c.db, "http://127.0.0.1:9/a", "t", ["incident.created"])
    c.service.submit_report(demo.report(), demo.actor("dispatcher"))
    wh.fan_out(c.db)
    for n in (1, 2):
        (job,) = wh.claim(c.db, "w", 60, 10)
        assert job.attempt == n
        status = wh.record(c.db, job, failed(job), max_attempts=2, base=0, cap=0)
    assert status == "dead"
    assert wh.claim(c.db, "w", 60, 10) == []
    (entry,) = wh.delivery_log(c.db, sub.id, "dead")
    assert [a["attempt"] for a in entry["log"]] == [1, 2]

    assert wh.replay(c.db, sub.id, dead_only=True) == 1
    (job,) = wh.claim(c.db, "w", 60, 10)
    assert job.attempt == 1  # a fresh round of attempts …
    wh.record(c.db, job, wh.Result(204, None, 1.0, "r"), 2, 0, 0)
    (entry,) = wh.delivery_log(c.db, sub.id)
    assert entry["status"] == "delivered"
    assert [a["status_code"] for a in entry["log"]] == [500, 500, 204]  # … and the log keeps the old ones

    # Replaying a range re-sends delivered events too, and fills in events the subscription never saw.
    assert wh.replay(c.db, sub.id, since_seq=0) == 1
    assert [d.status for d in deliveries(c)] == ["pending"]


def eventually(check: Callable[[], Any], what: str, limit: float = 60) -> Any:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def test_a_slow_receiver_never_holds_up_dispatch(container: Container, demo: Demo) -> None:
    c = container
    c.settings.webhook_poll_seconds = 0.05
    receiver = Receiver(hold=threading.Event())
    try:
        with TestClient(create_app(container=c)) as client:
            token = client.post("/api/v1/auth/token", data={"username": "admin", "password": "demo1234"})
            admin = {"Authorization": f"Bearer {token.json()['access_token']}"}
            token = client.post("/api/v1/auth/token", data={"username": "dispatcher", "password": "demo1234"})
            dispatcher = {"Authorization": f"Bearer {token.json()['access_token']}"}
            sub = client.post("/api/v1/webhooks", json={"url": receiver.url}, headers=admin).json()
            lon, lat = demo.point_in(demo.grid)
            report = {"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾"}
            assert client.post("/api/v1/reports", json=report, headers=dispatcher).status_code == 201
            assert receiver.arrived.wait(30)  # the receiver now holds the delivery open …
            # … and dispatch carries on: more reports and actions commit while it hangs.
            for _ in range(3):
                assert client.post("/api/v1/reports", json=report, headers=dispatcher).status_code == 201
            pending = client.get(f"/api/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"]
            assert pending and all(d["status"] == "pending" for d in pending)
            receiver.hold.set()  # type: ignore[union-attr]

            def all_delivered() -> bool:
                items = client.get(f"/api/v1/webhooks/{sub['id']}/deliveries", headers=admin).json()["items"]
                return len(items) >= 4 and all(d["status"] == "delivered" for d in items)

            eventually(all_delivered, "every delivery once the receiver answers")
    finally:
        receiver.close()


def test_the_egress_allow_list() -> None:
    allowed = "127.0.0.1, .gov.example"
    assert wh.host_allowed("http://127.0.0.1:8080/hook", allowed)
    assert wh.host_allowed("https://sms.gov.example/hook", allowed)
    assert wh.host_allowed("https://gov.example/hook", allowed)
    assert not wh.host_allowed("https://evilgov.example/hook", allowed)
    assert not wh.host_allowed("http://10.0.0.5/hook", allowed)
    assert wh.host_allowed("http://anything.example/hook", "")  # empty: any host
