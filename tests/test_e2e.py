"""End to end: a real `griddispatch serve` (uvicorn) process, real HTTP, a real `websockets` client.

The server runs with GRIDDISPATCH_CLOCK_SPEED=600 (a minute of time limits passes in 0.1 s), so the
30-minute acknowledgement limit of a sanitation case runs out after 3 real seconds.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from dispatch.bootstrap import load_active_tree
from dispatch.db import Database
from tests.server import Api, ServerProcess

pytestmark = pytest.mark.e2e
SPEED = 600


@pytest.fixture(scope="module")
def points(demo_template: Path) -> dict[str, Any]:
    db = Database(f"sqlite:///{demo_template}")
    tree = load_active_tree(db)
    db.dispose()
    from dispatch import models as m

    db = Database(f"sqlite:///{demo_template}")
    with db.read() as s:
        grid = s.get(m.User, "grid").unit_code
    db.dispose()
    p = tree.units[grid].geometry.representative_point()
    return {"grid": grid, "lon": p.x, "lat": p.y}


def start_server(tmp: Path, template: Path) -> ServerProcess:
    shutil.copy(template, tmp / "griddispatch.sqlite3")
    return ServerProcess(tmp, clock_speed=SPEED, timer_sweep_seconds=0.5, ws_heartbeat_seconds=2).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_template: Path) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("e2e"), demo_template)
    yield proc
    proc.stop()


def body(points: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {
        "lon": points["lon"],
        "lat": points["lat"],
        "category": "sanitation",
        "description": "小区门口垃圾满溢",
        "reporter": {"name": "王五", "phone": "13812341234"},
        **kw,
    }


class Screen:
    """A command-centre screen: a websockets client that keeps every message it gets."""

    def __init__(self, url: str, token: str, since: int | None = None) -> None:
        self.url, self.token, self.since = url, token, since
        self.messages: list[dict[str, Any]] = []

    async def __aenter__(self) -> Screen:
        self.ws = await connect(self.url)
        await self.ws.send(json.dumps({"token": self.token, "since": self.since}))
        self.welcome = json.loads(await self.ws.recv())
        assert self.welcome["type"] == "welcome"
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if "seq" in m and m.get("type") not in ("welcome", "heartbeat")]

    async def wait_for(self, predicate: Any, timeout: float = 15) -> dict[str, Any]:
        end = time.monotonic() + timeout
        for m in self.events:
            if predicate(m):
                return m
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no matching event within {timeout}s; got {[(m.get('seq'), m.get('type')) for m in self.messages]}"
                )
            m = json.loads(await asyncio.wait_for(self.ws.recv(), left))
            self.messages.append(m)
            if m.get("type") not in ("welcome", "heartbeat") and predicate(m):
                return m


def of(incident_id: str, type_: str) -> Any:
    return lambda m: m["incident_id"] == incident_id and m["type"] == type_


def test_full_path_over_http_and_websocket(server: ServerProcess, points: dict[str, Any]) -> None:
    api = Api(server.url)

    async def scenario() -> None:
        async with Screen(server.ws_url, api.token("dispatcher")) as screen:
            r = api.report("dispatcher", body(points), key="e2e-full-1")
            assert r.status_code == 201, r.text
            iid = r.json()["id"]
            assert r.json()["grid"]["code"] == points["grid"]
            await screen.wait_for(of(iid, "incident.created"))

            # Nobody accepts: after 3 real seconds (30 minutes of limits) the system escalates.
            escalated = await screen.wait_for(of(iid, "incident.escalated"), timeout=20)
            assert (
                escalated["data"]["reason"] == "ack_timeout"
                and escalated["data"]["to"]["tier"] == "community"
            )

            steps = [
                ("community", "escalate", {"note": "需要街道协调"}),
                ("township", "accept", {}),
                ("township", "dispatch", {"departments": {"lead": "360102.urban", "co": ["360102.housing"]}}),
                ("dept_urban", "dept_accept", {}),
                ("dept_housing", "dept_accept", {}),
                ("dept_urban", "dept_complete", {"note": "已清运"}),
                ("dept_housing", "dept_complete", {"note": "已修缮"}),
                ("grid", "verify_pass", {}),
                ("supervisor", "rate", {"rating": 5}),
            ]
            for user, action, kw in steps:
                resp = api.act(user, iid, action, **kw)
                assert resp.status_code == 200, (action, resp.text)
            rated = await screen.wait_for(of(iid, "incident.rated"))
            assert rated["data"]["incident"]["state"] == "closed"

            mine = [m for m in screen.events if m["incident_id"] == iid]
            seqs = [m["seq"] for m in screen.events]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
            acted = [m["data"]["action"] for m in mine if "action" in m["data"]]
            assert acted == ["auto_escalate"] + [a for _, a, _ in steps]
            assert "incident.warning" in [m["type"] for m in mine]  # the yellow light came before the red
            assert all(m["jurisdiction"][-1] == points["grid"] for m in mine)

        detail = api.get("supervisor", f"/incidents/{iid}").json()
        assert [t["action"] for t in detail["timeline"]] == ["report", "warning", "auto_escalate"] + [
            a for _, a, _ in steps
        ]
        # Each timeline entry shares its seq with the event of the same change (duty notices have no entry).
        assert [t["seq"] for t in detail["timeline"]] == [
            m["seq"] for m in mine if m["type"] != "incident.notified"
        ]
        log = api.get("supervisor", "/escalations").json()["items"]
        assert [(e["incident_id"], e["reason"]) for e in log if e["incident_id"] == iid] == [
            (iid, "urge"),
            (iid, "ack_timeout"),
            (iid, "supervise"),
            (iid, "manual"),
        ]
        assert api.get("supervisor", "/escalations/verify").json()["ok"] is True

    asyncio.run(scenario())


def test_reconnect_with_since_gets_exactly_the_missed_events(
    server: ServerProcess, points: dict[str, Any]
) -> None:
    api = Api(server.url)

    async def scenario() -> None:
        async with Screen(server.ws_url, api.token("dispatcher")) as first:
            iid = api.report("dispatcher", body(points)).json()["id"]
            seen = await first.wait_for(of(iid, "incident.created"))
        last = seen["seq"]
        # While the screen is away: three more changes.
        assert api.act("grid", iid, "accept").status_code == 200
        assert api.act("grid", iid, "comment", note="已到现场").status_code == 200
        assert api.act("grid", iid, "resolve", note="已清理").status_code == 200
        async with Screen(server.ws_url, api.token("dispatcher"), since=last) as again:
            await again.wait_for(lambda m: m["incident_id"] == iid and m["data"].get("action") == "resolve")
            missed = [m for m in again.events if m["incident_id"] == iid]
            assert [m["data"]["action"] for m in missed] == ["accept", "comment", "resolve"]
            seqs = [m["seq"] for m in again.events]
            assert seqs[0] == last + 1 or all(s > last for s in seqs)
            assert seqs == sorted(set(seqs)), "no duplicates, in order"
            # …and then it keeps streaming live.
            assert api.act("grid", iid, "verify_pass").status_code == 200
            live = await again.wait_for(
                lambda m: m["incident_id"] == iid and m["data"].get("action") == "verify_pass"
            )
            assert live["seq"] > seqs[-1]
            all_seqs = [m["seq"] for m in again.events]
            assert all_seqs == sorted(set(all_seqs))

    asyncio.run(scenario())


def test_replay_equals_the_outbox(server: ServerProcess, points: dict[str, Any]) -> None:
    """Replaying from 0 gives every visible event once, contiguous for a county-wide screen."""
    api = Api(server.url)
    api.report("dispatcher", body(points))

    async def scenario() -> None:
        async with Screen(server.ws_url, api.token("dispatcher"), since=0) as screen:
            latest = screen.welcome["seq"]
            await screen.wait_for(lambda m: m["seq"] == latest)
            assert [m["seq"] for m in screen.events][:latest] == list(range(1, latest + 1))

    asyncio.run(scenario())


def test_two_conflicting_actions_at_the_same_moment(server: ServerProcess, points: dict[str, Any]) -> None:
    api = Api(server.url)
    iid = api.report("dispatcher", body(points)).json()["id"]
    token = api.token("grid")

    async def race() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}
        ) as client:
            return await asyncio.gather(
                client.post(
                    f"/incidents/{iid}/actions", json={"action": "call_community", "expected_version": 1}
                ),
                client.post(
                    f"/incidents/{iid}/actions",
                    json={"action": "resolve", "note": "就地解决", "expected_version": 1},
                ),
            )

    responses = asyncio.run(race())
    assert sorted(r.status_code for r in responses) == [200, 409]
    loser = next(r for r in responses if r.status_code == 409).json()
    assert loser["code"] in ("illegal_action", "stale_version") and loser["detail"]
    detail = api.get("dispatcher", f"/incidents/{iid}").json()
    assert detail["version"] == 2 and len(detail["timeline"]) == 2


def test_illegal_action_is_409_and_changes_nothing(server: ServerProcess, points: dict[str, Any]) -> None:
    api = Api(server.url)
    iid = api.report("dispatcher", body(points)).json()["id"]
    before = api.get("dispatcher", f"/incidents/{iid}").json()
    r = api.act("grid", iid, "verify_pass")
    assert r.status_code == 409
    assert r.json()["code"] == "illegal_action" and "grid_discovery" in r.json()["detail"]
    assert api.get("dispatcher", f"/incidents/{iid}").json() == before


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"lon": float("nan")}, 422, None),
        ({"lon": 181.0}, 422, "validation_error"),
        ({"lat": -91.0}, 422, "validation_error"),
        ({"lat": "north"}, 422, "validation_error"),
        ({"category": "aliens"}, 422, "unknown_category"),
        ({"severity": "apocalyptic"}, 422, "validation_error"),
        ({"description": ""}, 422, "validation_error"),
        ({"description": None}, 422, "validation_error"),
        ({"unexpected": 1}, 422, "validation_error"),
    ],
)
def test_bad_reports_are_refused_and_nothing_is_stored(
    server: ServerProcess, points: dict[str, Any], change: dict[str, Any], status: int, code: str | None
) -> None:
    api = Api(server.url)
    count = len(api.get("dispatcher", "/incidents", limit=500).json()["items"])
    payload = {k: v for k, v in {**body(points), **change}.items() if v is not None}  # None: field left out
    raw = json.dumps(payload, allow_nan=True)
    r = api.http.post(
        "/reports", content=raw, headers=api.headers("dispatcher", **{"content-type": "application/json"})
    )
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    if code:
        assert r.json()["code"] == code
    assert "Traceback" not in r.text
    assert len(api.get("dispatcher", "/incidents", limit=500).json()["items"]) == count


def test_missing_fields_and_oversize_bodies(server: ServerProcess, points: dict[str, Any]) -> None:
    api = Api(server.url)
    r = api.report("dispatcher", {"lon": points["lon"]})
    assert r.status_code == 422
    assert {e["field"] for e in r.json()["detail"]} >= {"lat", "category", "description"}
    huge = body(points, description="垃圾" * 400_000)
    r = api.report("dispatcher", huge)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    r = api.http.post(
        "/reports",
        content=b"{not json",
        headers=api.headers("dispatcher", **{"content-type": "application/json"}),
    )
    assert r.status_code == 422
    assert api.http.post("/reports", json=body(points)).status_code == 401


def test_same_idempotency_key_twice_makes_one_incident(server: ServerProcess, points: dict[str, Any]) -> None:
    api = Api(server.url)
    a = api.report("dispatcher", body(points), key="retry-me")
    b = api.report("dispatcher", body(points), key="retry-me")
    assert a.status_code == b.status_code == 201
    assert a.json() == b.json()
    ids = [i["id"] for i in api.get("dispatcher", "/incidents", limit=500).json()["items"]]
    assert ids.count(a.json()["id"]) == 1


def test_locate_inside_and_outside(server: ServerProcess, points: dict[str, Any]) -> None:
    api = Api(server.url)
    r = api.get("grid", "/grids/locate", lon=points["lon"], lat=points["lat"])
    assert r.status_code == 200 and r.json()["grid"]["code"] == points["grid"]
    assert [u["level"] for u in r.json()["path"]] == ["county", "township", "community", "grid"]
    far = api.get("grid", "/grids/locate", lon=100.0, lat=30.0)
    assert far.status_code == 404 and far.json()["detail"]["nearest"]["distance_m"] > 100_000


def test_sigkill_with_a_pending_deadline_escalates_exactly_once_after_restart(
    tmp_path: Path, demo_template: Path, points: dict[str, Any]
) -> None:
    proc = start_server(tmp_path, demo_template)
    try:
        api = Api(proc.url)
        iid = api.report("dispatcher", body(points)).json()["id"]
        assert api.get("dispatcher", f"/incidents/{iid}").json()["state"] == "grid_discovery"
        proc.kill()  # the 30-minute (3 s real) ack deadline is still pending
        time.sleep(4)  # …and passes while the server is down
        proc.start()
        api = Api(proc.url)
        deadline = time.monotonic() + 15
        while api.get("dispatcher", f"/incidents/{iid}").json()["state"] == "grid_discovery":
            assert time.monotonic() < deadline, "the passed deadline did not fire after restart"
            time.sleep(0.2)
        time.sleep(1.0)  # give a duplicate firing the chance to show up
        log = [
            e
            for e in api.get("supervisor", "/escalations").json()["items"]
            if e["incident_id"] == iid and e["from"]["tier"] == "grid"
        ]
        reasons = [e["reason"] for e in log]
        # Both the yellow warning and the red deadline passed while down; whichever fires first, the escalation
        # (and its 督办 record) happens exactly once. A warning that fires after the red one is stale.
        assert (reasons.count("ack_timeout"), reasons.count("supervise")) == (1, 1)
        assert reasons.count("urge") <= 1

        async def replay() -> list[dict[str, Any]]:
            async with Screen(proc.ws_url, api.token("dispatcher"), since=0) as screen:
                await screen.wait_for(lambda m: m["seq"] == screen.welcome["seq"])
                return screen.events

        events = asyncio.run(replay())
        escalations = [
            e
            for e in events
            if e["incident_id"] == iid
            and e["type"] == "incident.escalated"
            and e["data"]["from"]["tier"] == "grid"
        ]
        assert len(escalations) == 1
    finally:
        proc.stop()


def test_lights_go_green_yellow_red_and_county_supervision_repeats(
    tmp_path: Path, demo_template: Path, points: dict[str, Any]
) -> None:
    """Issue 4: at clock speed 1800 a major case's 15-minute township ack limit passes in 0.5 s."""
    shutil.copy(demo_template, tmp_path / "griddispatch.sqlite3")
    proc = ServerProcess(tmp_path, clock_speed=1800, timer_sweep_seconds=0.5, ws_heartbeat_seconds=2).start()
    try:
        api = Api(proc.url)

        async def scenario() -> tuple[str, list[dict[str, Any]]]:
            async with Screen(proc.ws_url, api.token("supervisor")) as screen:
                r = api.report("dispatcher", body(points, severity="major"))
                assert r.status_code == 201, r.text
                iid = r.json()["id"]
                created = await screen.wait_for(of(iid, "incident.created"))
                assert created["data"]["incident"]["light"] == "green"
                warning = await screen.wait_for(of(iid, "incident.warning"))
                assert warning["data"]["clock"] == "ack"
                red = await screen.wait_for(of(iid, "incident.escalated"))
                assert (red["data"]["reason"], red["data"]["to"]["tier"]) == ("ack_timeout", "county")
                await screen.wait_for(
                    lambda m: (
                        m["incident_id"] == iid and m["type"] == "incident.overdue" and m["data"]["alarm"]
                    )
                )
                # …and again after the repeat interval (30 minutes of limits, one real second).
                await screen.wait_for(
                    lambda m: (
                        m["incident_id"] == iid
                        and m["type"] == "incident.overdue"
                        and m["data"]["clock"] == "supervise"
                    ),
                    timeout=20,
                )
                return iid, screen.events

        iid, events = asyncio.run(scenario())
        mine = [e["type"] for e in events if e["incident_id"] == iid]
        assert (
            mine.index("incident.warning") < mine.index("incident.escalated") < mine.index("incident.overdue")
        )
        log = [e for e in api.get("supervisor", "/escalations").json()["items"] if e["incident_id"] == iid]
        reasons = [e["reason"] for e in log]
        assert reasons[:4] == ["severity", "urge", "ack_timeout", "supervise"]
        assert reasons.count("supervise") >= 3  # the township's 督办, then county 督办 repeating
        assert api.get("supervisor", f"/incidents/{iid}").json()["light"] == "red"
    finally:
        proc.stop()


def test_the_server_log_holds_no_phone_numbers_and_no_tokens(
    server: ServerProcess, points: dict[str, Any]
) -> None:
    """Runs last in this module: everything above went through this server (reports with a reporter's phone,
    logins, WebSocket hellos carrying tokens)."""
    import re

    api = Api(server.url)
    api.report("dispatcher", body(points, reporter={"name": "赵六", "phone": "13912345678"}))
    time.sleep(0.5)
    log = server.log.read_text(encoding="utf-8", errors="replace")
    assert log, "the server wrote no log"
    assert "13812341234" not in log and "13912345678" not in log
    assert re.search(r"eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}", log) is None, "a JWT reached the log"
    for token in api.tokens.values():
        assert token not in log
