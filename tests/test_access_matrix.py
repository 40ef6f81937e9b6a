"""Every role × every endpoint (and the WebSocket) × a target inside and outside the user's jurisdiction.

The expectations are written from SPEC §1/§3 and the issue's rules: a user sees and acts inside their own
subtree; department staff on cases dispatched to their department; a screen token reads its jurisdiction; a
system key reads back what it filed; admin-only endpoints are admin-only; what a user may not see is 404,
what they may see but not do is 403, and a refused request changes nothing. A new endpoint without a row
here fails `test_every_endpoint_is_in_the_matrix`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from dispatch import models as m
from dispatch.bootstrap import Container
from dispatch.domain import Command
from dispatch.open311_keys import add_key
from tests.conftest import Demo

HUMANS = ["grid", "community", "township", "dispatcher", "dept_urban", "supervisor", "admin"]
ROLES = [*HUMANS, "screen", "system", "anonymous"]
COUNTY_WIDE = {"dispatcher", "supervisor", "admin"}


@dataclass
class World:
    client: TestClient
    container: Container
    headers: dict[str, dict[str, str]]
    case: dict[str, str]  # inside / outside → incident id
    unit: dict[str, str]  # inside / outside → a community code
    point: dict[str, tuple[float, float]]
    photo: str
    sees: dict[str, set[str]]  # inside / outside → roles that may see that case


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), "orange").save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def world(container: Container, demo: Demo) -> Iterator[World]:
    with TestClient(create_app(container=container)) as client:
        headers: dict[str, dict[str, str]] = {"anonymous": {}}
        for user in HUMANS:
            r = client.post("/api/v1/auth/token", data={"username": user, "password": "demo1234"})
            headers[user] = {"Authorization": f"Bearer {r.json()['access_token']}"}
        inside_unit = demo.grid[:12]
        screen = client.post(
            "/api/v1/auth/screen-token", json={"jurisdiction": inside_unit}, headers=headers["dispatcher"]
        )
        headers["screen"] = {"Authorization": f"Bearer {screen.json()['access_token']}"}
        headers["system"] = {"X-API-Key": add_key(container.db, "hotline", "360102", container.clock.now())}
        other_grid = next(
            c for c, u in demo.tree.units.items() if u.level == "grid" and not c.startswith(demo.grid[:9])
        )
        point = {"inside": demo.point_in(demo.grid), "outside": demo.point_in(other_grid)}
        # Inside: a major case with a photo, dispatched by the street centre to the urban management bureau.
        lon, lat = point["inside"]
        report = {
            "lon": lon,
            "lat": lat,
            "category": "sanitation",
            "severity": "major",
            "description": "垃圾",
        }
        made = client.post(
            "/api/v1/reports",
            data={"report": json.dumps(report)},
            files=[("photos", ("a.png", _png(), "image/png"))],
            headers=headers["dispatcher"],
        )
        assert made.status_code == 201, made.text
        inside = made.json()
        container.service.act(inside["id"], Command("dispatch", lead="360102.urban"), demo.actor("township"))
        lon, lat = point["outside"]
        outside = client.post(
            "/api/v1/reports",
            json={"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾"},
            headers=headers["dispatcher"],
        ).json()
        yield World(
            client,
            container,
            headers,
            {"inside": inside["id"], "outside": outside["id"]},
            {"inside": inside_unit, "outside": other_grid[:12]},
            point,
            inside["photos"][0] if isinstance(inside["photos"][0], str) else inside["photos"][0]["id"],
            {
                "inside": {
                    "grid",
                    "community",
                    "township",
                    "dispatcher",
                    "dept_urban",
                    "supervisor",
                    "admin",
                    "screen",
                },
                "outside": set(COUNTY_WIDE),
            },
        )


UNIT_OF = {"grid": 15, "community": 12, "township": 9}


def sees_unit(role: str, unit: str, w: World, demo_grid: str) -> bool:
    """sees_jurisdiction for the matrix's actors."""
    if role in COUNTY_WIDE:
        return True
    if role in UNIT_OF:
        return unit.startswith(demo_grid[: UNIT_OF[role]])
    if role == "screen":
        return unit.startswith(w.unit["inside"])
    return False


def manages(role: str, unit: str, demo_grid: str) -> bool:
    if role in ("admin", "dispatcher"):
        return True
    if role in ("township", "community"):
        return unit.startswith(demo_grid[: UNIT_OF[role]])
    return False


Expect = Callable[[str, str, World, str], int | set[int]]


@dataclass
class Row:
    method: str
    path: str  # OpenAPI path
    url: Callable[[str, World], str]
    expect: Expect
    body: Callable[[str, World], dict[str, Any]] | None = None
    writes: bool = False


def authed(ok: int) -> Expect:
    return lambda role, target, w, g: 401 if role == "anonymous" else ok


def only(roles: set[str], ok: int, refused: int = 403) -> Expect:
    return lambda role, target, w, g: 401 if role == "anonymous" else ok if role in roles else refused


def public(ok: int) -> Expect:
    return lambda role, target, w, g: ok


def case_read(role: str, target: str, w: World, g: str) -> int:
    return 401 if role == "anonymous" else 200 if role in w.sees[target] else 404


def case_comment(role: str, target: str, w: World, g: str) -> int:
    if role == "anonymous":
        return 401
    if role not in w.sees[target]:
        return 404
    return 403 if role == "screen" else 200


def unit_read(ok: int) -> Expect:
    return lambda role, target, w, g: (
        401 if role == "anonymous" else ok if sees_unit(role, w.unit[target], w, g) else 404
    )


def unit_filter(role: str, target: str, w: World, g: str) -> int:
    if role == "anonymous":
        return 401
    return 200 if sees_unit(role, w.unit[target], w, g) else 403


def roster_write(ok_inside: int, ok_outside: int) -> Expect:
    def expect(role: str, target: str, w: World, g: str) -> int:
        if role == "anonymous":
            return 401
        if not manages(role, w.unit[target], g):
            return 403
        return ok_inside if target == "inside" else ok_outside

    return expect


def screen_token(role: str, target: str, w: World, g: str) -> int:
    if role == "anonymous":
        return 401
    issuers = {"admin", "dispatcher", "supervisor", "township", "community"}
    return 200 if role in issuers and sees_unit(role, w.unit[target], w, g) else 403


def report_body(role: str, w: World, target: str = "inside") -> dict[str, Any]:
    lon, lat = w.point[target]
    return {"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾"}


ROSTER = {"members": ["community"], "shift_hours": 24, "anchor": "2026-01-01T08:00:00+08:00"}
OVERRIDE = {"start": "2026-12-01T08:00:00+08:00", "end": "2026-12-01T20:00:00+08:00", "member": "community"}
CALENDAR = {"periods": [["08:30", "12:00"], ["14:30", "17:30"]]}
ADMIN = {"admin"}
CHAIN_CHECKERS = {"supervisor", "admin", "dispatcher"}

ROWS = [
    Row("GET", "/healthz", lambda t, w: "/healthz", public(200)),
    Row("GET", "/metrics", lambda t, w: "/metrics", public(200)),
    Row(
        "POST",
        "/api/v1/reports",
        lambda t, w: "/api/v1/reports",
        only(set(HUMANS) | {"system"}, 201),
        body=lambda t, w: report_body("", w, t),
        writes=True,
    ),
    Row("GET", "/api/v1/incidents", lambda t, w: "/api/v1/incidents", authed(200)),
    Row("GET", "/api/v1/incidents/{incident_id}", lambda t, w: f"/api/v1/incidents/{w.case[t]}", case_read),
    Row(
        "POST",
        "/api/v1/incidents/{incident_id}/actions",
        lambda t, w: f"/api/v1/incidents/{w.case[t]}/actions",
        case_comment,
        body=lambda t, w: {"action": "comment", "note": "矩阵测试"},
        writes=True,
    ),
    Row(
        "GET",
        "/api/v1/incidents/{incident_id}/photos/{photo_id}",
        lambda t, w: f"/api/v1/incidents/{w.case['inside']}/photos/{w.photo}",
        lambda role, t, w, g: 401 if role == "anonymous" else 200 if role in w.sees["inside"] else 404,
    ),
    Row("GET", "/api/v1/escalations", lambda t, w: "/api/v1/escalations", authed(200)),
    Row(
        "GET",
        "/api/v1/escalations/verify",
        lambda t, w: "/api/v1/escalations/verify",
        only(CHAIN_CHECKERS, 200),
    ),
    Row("GET", "/api/v1/workflows", lambda t, w: "/api/v1/workflows", authed(200)),
    Row("GET", "/api/v1/workflows/{name}", lambda t, w: "/api/v1/workflows/four_stage", authed(200)),
    Row(
        "GET",
        "/api/v1/grids/locate",
        lambda t, w: f"/api/v1/grids/locate?lon={w.point[t][0]}&lat={w.point[t][1]}",
        authed(200),
    ),
    Row("GET", "/api/v1/grids", lambda t, w: "/api/v1/grids?level=township", authed(200)),
    Row("GET", "/api/v1/grids/generations", lambda t, w: "/api/v1/grids/generations", authed(200)),
    Row(
        "GET",
        "/api/v1/grids/generations/{generation}/report",
        lambda t, w: "/api/v1/grids/generations/1/report",
        authed(404),  # the demo set was generated, not imported: it has no validation report
    ),
    Row("GET", "/api/v1/grids/diff", lambda t, w: "/api/v1/grids/diff?from=1&to=1", authed(200)),
    Row(
        "POST",
        "/api/v1/grids/generations/{generation}/activate",
        lambda t, w: "/api/v1/grids/generations/1/activate",
        only(ADMIN, 200),
        writes=True,
    ),
    Row("POST", "/api/v1/grids/import", lambda t, w: "/api/v1/grids/import", only(ADMIN, 422), writes=True),
    Row("GET", "/api/v1/pages/me", lambda t, w: "/api/v1/pages/me", authed(200)),
    Row("GET", "/api/v1/pages/config", lambda t, w: "/api/v1/pages/config", authed(200)),
    Row("GET", "/api/v1/stats", lambda t, w: f"/api/v1/stats?jurisdiction={w.unit[t]}", unit_filter),
    Row(
        "GET",
        "/api/v1/stats/overdue",
        lambda t, w: f"/api/v1/stats/overdue?jurisdiction={w.unit[t]}",
        unit_filter,
    ),
    Row("GET", "/api/v1/duty/{unit}", lambda t, w: f"/api/v1/duty/{w.unit[t]}", unit_read(200)),
    Row(
        "PUT",
        "/api/v1/duty/{unit}",
        lambda t, w: f"/api/v1/duty/{w.unit[t]}",
        roster_write(200, 200),
        body=lambda t, w: ROSTER,
        writes=True,
    ),
    Row(
        "POST",
        "/api/v1/duty/{unit}/overrides",
        lambda t, w: f"/api/v1/duty/{w.unit[t]}/overrides",
        roster_write(201, 201),  # the PUT row above gave the outside community a roster
        body=lambda t, w: OVERRIDE,
        writes=True,
    ),
    Row(
        "PUT",
        "/api/v1/calendars/{county}",
        lambda t, w: "/api/v1/calendars/360102",
        only(ADMIN, 200),
        body=lambda t, w: CALENDAR,
        writes=True,
    ),
    Row(
        "POST",
        "/api/v1/auth/screen-token",
        lambda t, w: "/api/v1/auth/screen-token",
        screen_token,
        body=lambda t, w: {"jurisdiction": w.unit[t]},
    ),
    Row("GET", "/api/v1/webhooks", lambda t, w: "/api/v1/webhooks", only(ADMIN, 200)),
    Row(
        "POST",
        "/api/v1/webhooks",
        lambda t, w: "/api/v1/webhooks",
        only(ADMIN, 201),
        body=lambda t, w: {
            "url": "http://127.0.0.1:9/hook",
            "secret": "s" * 32,
            "events": ["incident.created"],
            "jurisdiction": "360102",
        },
        writes=True,
    ),
    Row(
        "DELETE",
        "/api/v1/webhooks/{subscription_id}",
        lambda t, w: "/api/v1/webhooks/999999",
        only(ADMIN, 404),
        writes=True,
    ),
    Row(
        "GET",
        "/api/v1/webhooks/{subscription_id}/deliveries",
        lambda t, w: "/api/v1/webhooks/999999/deliveries",
        only(ADMIN, 404),
    ),
    Row(
        "POST",
        "/api/v1/webhooks/{subscription_id}/replay",
        lambda t, w: "/api/v1/webhooks/999999/replay",
        only(ADMIN, 404),
        body=lambda t, w: {"since": 0},
        writes=True,
    ),
    Row("GET", "/open311/v2/discovery.{fmt}", lambda t, w: "/open311/v2/discovery.json", public(200)),
    Row("GET", "/open311/v2/services.{fmt}", lambda t, w: "/open311/v2/services.json", public(200)),
    Row(
        "GET",
        "/open311/v2/services/{code}.{fmt}",
        lambda t, w: "/open311/v2/services/sanitation.json",
        public(200),
    ),
    Row("GET", "/open311/v2/requests.{fmt}", lambda t, w: "/open311/v2/requests.json", public(200)),
    Row(
        "GET",
        "/open311/v2/requests/{request_id}.{fmt}",
        lambda t, w: f"/open311/v2/requests/{w.case[t]}.json",
        public(200),
    ),
    Row(
        "GET",
        "/open311/v2/tokens/{token}.{fmt}",
        lambda t, w: "/open311/v2/tokens/0000000000000000.json",
        public(404),
    ),
]
# Login takes a password, not a token; Open311 POST takes its own api_key form field (tests/test_open311.py).
COVERED_ELSEWHERE = {("POST", "/api/v1/auth/token"), ("POST", "/open311/v2/requests.{fmt}")}


def test_every_endpoint_is_in_the_matrix() -> None:
    spec = create_app().openapi()["paths"]
    endpoints = {(method.upper(), path) for path, ops in spec.items() for method in ops}
    listed = {(r.method, r.path) for r in ROWS} | COVERED_ELSEWHERE
    assert endpoints == listed, f"missing: {sorted(endpoints - listed)}; stale: {sorted(listed - endpoints)}"


def _state(c: Container) -> tuple[int, ...]:
    tables = [
        m.Incident,
        m.Event,
        m.EscalationEntry,
        m.TimelineEntry,
        m.DutyOverride,
        m.DutyRoster,
        m.CountyCalendar,
    ]
    with c.db.read() as s:
        return tuple(
            int(s.execute(select(func.count()).select_from(t.__table__)).scalar_one()) for t in tables
        )


def test_role_by_endpoint_by_target(world: World, demo: Demo) -> None:
    """One world for the whole matrix (building one per row would take minutes); rows run in order, and
    their expectations hold whatever the rows before them changed."""
    wrong = []
    for row in ROWS:
        for target in ("inside", "outside"):
            for role in ROLES:
                expected = row.expect(role, target, world, demo.grid)
                allowed = {expected} if isinstance(expected, int) else expected
                before = _state(world.container) if row.writes else None
                kwargs: dict[str, Any] = {"headers": world.headers[role]}
                if row.body is not None:
                    kwargs["json"] = row.body(target, world)
                r = world.client.request(row.method, row.url(target, world), **kwargs)
                where = f"{row.method} {row.path} as {role} ({target})"
                if r.status_code not in allowed:
                    wrong.append(f"{where}: {r.status_code}, expected {sorted(allowed)}: {r.text[:100]}")
                if before is not None and r.status_code >= 400 and _state(world.container) != before:
                    wrong.append(f"{where}: refused with {r.status_code} but the database changed")
    assert not wrong, "\n".join(wrong)


def test_lists_show_exactly_what_each_role_may_see(world: World) -> None:
    for role in [*HUMANS, "screen"]:
        ids = {
            i["id"]
            for i in world.client.get("/api/v1/incidents", headers=world.headers[role]).json()["items"]
        }
        for target in ("inside", "outside"):
            assert (world.case[target] in ids) == (role in world.sees[target]), (role, target)
        log = world.client.get("/api/v1/escalations", headers=world.headers[role]).json()["items"]
        cases = {e["incident_id"] for e in log}
        assert world.case["outside"] not in cases or role in COUNTY_WIDE, role


def test_websocket_by_role_and_jurisdiction(world: World, demo: Demo) -> None:
    for role in [*HUMANS, "screen"]:
        token = world.headers[role]["Authorization"].removeprefix("Bearer ")
        for target in ("inside", "outside"):
            allowed = sees_unit(role, world.unit[target], world, demo.grid)
            with world.client.websocket_connect("/ws/events") as ws:
                ws.send_text(json.dumps({"token": token, "since": None, "jurisdiction": world.unit[target]}))
                if allowed:
                    assert ws.receive_json()["type"] == "welcome", (role, target)
                else:
                    with pytest.raises(WebSocketDisconnect):
                        ws.receive_json()
