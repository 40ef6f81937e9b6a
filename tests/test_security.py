"""Screen tokens, system API keys, rate limits and hostile coordinates (issue 6)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from starlette.websockets import WebSocketDisconnect

from api.app import create_app
from dispatch import models as m
from dispatch.bootstrap import Container
from dispatch.open311_keys import add_key
from tests.conftest import Demo


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container)) as c:
        yield c


def login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": "demo1234"})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def report_body(demo: Demo, code: str, **kw: Any) -> dict[str, Any]:
    lon, lat = demo.point_in(code)
    return {"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾", **kw}


def count(container: Container, table: Any) -> int:
    with container.db.read() as s:
        return int(s.execute(select(func.count()).select_from(table)).scalar_one())


def test_screen_tokens_read_their_jurisdiction_and_change_nothing(
    client: TestClient, container: Container, demo: Demo
) -> None:
    dispatcher = login(client, "dispatcher")
    community = demo.grid[:12]
    inside = client.post("/api/v1/reports", json=report_body(demo, demo.grid), headers=dispatcher).json()[
        "id"
    ]
    other_grid = next(
        c for c, u in demo.tree.units.items() if u.level == "grid" and not c.startswith(demo.grid[:9])
    )
    outside = client.post("/api/v1/reports", json=report_body(demo, other_grid), headers=dispatcher).json()[
        "id"
    ]

    r = client.post(
        "/api/v1/auth/screen-token", json={"jurisdiction": community, "days": 7}, headers=dispatcher
    )
    assert r.status_code == 200, r.text
    screen = {"Authorization": f"Bearer {r.json()['access_token']}"}
    listed = [i["id"] for i in client.get("/api/v1/incidents", headers=screen).json()["items"]]
    assert inside in listed and outside not in listed
    assert client.get(f"/api/v1/incidents/{outside}", headers=screen).status_code == 404

    before = (count(container, m.Incident.__table__), count(container, m.Event.__table__))
    assert (
        client.post("/api/v1/reports", json=report_body(demo, demo.grid), headers=screen).status_code == 403
    )
    acted = client.post(f"/api/v1/incidents/{inside}/actions", json={"action": "accept"}, headers=screen)
    assert acted.status_code == 403
    assert (
        client.post("/api/v1/auth/screen-token", json={"jurisdiction": community}, headers=screen).status_code
        == 403
    )
    assert (count(container, m.Incident.__table__), count(container, m.Event.__table__)) == before

    # A township worker cannot issue a screen for somebody else's township.
    township = login(client, "township")
    foreign = other_grid[:9]
    assert (
        client.post("/api/v1/auth/screen-token", json={"jurisdiction": foreign}, headers=township).status_code
        == 403
    )


def test_screen_token_on_the_websocket_sees_only_its_jurisdiction(
    client: TestClient, container: Container, demo: Demo
) -> None:
    dispatcher = login(client, "dispatcher")
    community = demo.grid[:12]
    token = client.post(
        "/api/v1/auth/screen-token", json={"jurisdiction": community}, headers=dispatcher
    ).json()["access_token"]
    other_grid = next(
        c for c, u in demo.tree.units.items() if u.level == "grid" and not c.startswith(demo.grid[:9])
    )
    with client.websocket_connect("/ws/events") as ws:
        ws.send_text(json.dumps({"token": token, "since": None}))
        assert ws.receive_json()["type"] == "welcome"
        client.post("/api/v1/reports", json=report_body(demo, other_grid), headers=dispatcher)
        mine = client.post("/api/v1/reports", json=report_body(demo, demo.grid), headers=dispatcher).json()[
            "id"
        ]
        first = ws.receive_json()
        while first.get("type") == "heartbeat":
            first = ws.receive_json()
        assert first["incident_id"] == mine  # the other community's report never reached this screen
    with client.websocket_connect("/ws/events") as ws:
        ws.send_text(json.dumps({"token": token, "since": None, "jurisdiction": other_grid[:12]}))
        with pytest.raises(WebSocketDisconnect):  # asking for a jurisdiction outside the token's: closed
            ws.receive_json()


def test_system_api_keys_file_reports_and_read_back_only_their_own(
    client: TestClient, container: Container, demo: Demo
) -> None:
    key = add_key(container.db, "hotline-12345", "360102", container.clock.now())
    system = {"X-API-Key": key}
    r = client.post("/api/v1/reports", json=report_body(demo, demo.grid, source="hotline"), headers=system)
    assert r.status_code == 201, r.text
    mine = r.json()["id"]
    theirs = client.post(
        "/api/v1/reports", json=report_body(demo, demo.grid), headers=login(client, "dispatcher")
    ).json()["id"]
    listed = [i["id"] for i in client.get("/api/v1/incidents", headers=system).json()["items"]]
    assert listed == [mine]
    assert client.get(f"/api/v1/incidents/{theirs}", headers=system).status_code == 404
    assert client.get("/api/v1/incidents", headers={"X-API-Key": key + "x"}).status_code == 401
    acted = client.post(f"/api/v1/incidents/{mine}/actions", json={"action": "accept"}, headers=system)
    assert acted.status_code in (403, 409)


def test_rate_limits_answer_429_and_store_nothing(container: Container, demo: Demo) -> None:
    container.settings.rate_per_token = 1.0  # burst of 2
    try:
        with TestClient(create_app(container=container)) as c:
            headers = login(c, "dispatcher")
            before = count(container, m.Incident.__table__)
            codes = [
                c.post("/api/v1/reports", json=report_body(demo, demo.grid), headers=headers).status_code
                for _ in range(6)
            ]
            assert codes.count(201) <= 3 and 429 in codes
            limited = c.post("/api/v1/reports", json=report_body(demo, demo.grid), headers=headers)
            assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
            assert limited.json()["code"] == "rate_limited"
            assert count(container, m.Incident.__table__) == before + codes.count(201)
    finally:
        container.settings.rate_per_token = 200.0


coordinate = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([180.0000001, -180.0000001, 90.0000001, 1e308, -1e308, 0.0, 179.9999999, -179.9999999]),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lon=coordinate, lat=coordinate)
def test_hostile_coordinates_are_refused_never_a_server_error(
    client: TestClient, container: Container, demo: Demo, lon: Any, lat: Any
) -> None:
    headers = login(client, "dispatcher")
    before = count(container, m.Incident.__table__)
    body = json.dumps({"lon": lon, "lat": lat, "category": "sanitation", "description": "x"}, allow_nan=True)
    r = client.post("/api/v1/reports", content=body, headers={**headers, "content-type": "application/json"})
    assert r.status_code < 500, r.text
    x, y = _as_coordinate(lon), _as_coordinate(lat)
    valid = x is not None and y is not None and abs(x) <= 180 and abs(y) <= 90
    if r.status_code == 201:
        assert valid  # only real coordinates are stored (far away ones go to triage)
        assert count(container, m.Incident.__table__) == before + 1
    else:
        assert 400 <= r.status_code < 500 and "detail" in r.json()
        assert count(container, m.Incident.__table__) == before
    located = client.get("/api/v1/grids/locate", params={"lon": str(lon), "lat": str(lat)}, headers=headers)
    assert located.status_code in (200, 404, 422)


def test_locate_refuses_nan_and_infinities(client: TestClient) -> None:
    headers = login(client, "grid")
    for lon, lat in (("nan", "28.7"), ("inf", "28.7"), ("115.9", "-inf"), ("1e400", "0")):
        assert (
            client.get("/api/v1/grids/locate", params={"lon": lon, "lat": lat}, headers=headers).status_code
            == 422
        )


def _as_coordinate(value: Any) -> float | None:
    """What a lenient reader may take as a number: finite floats and numeric strings, never booleans."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


finite_or_not = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.sampled_from([180.0, -180.0, 179.9999, -179.9999, 1e300, -1e300, 0.0]),
)
ring = st.lists(st.tuples(finite_or_not, finite_or_not), min_size=0, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rings=st.lists(ring, min_size=1, max_size=3), code=st.sampled_from(["360102", "36010200", "", "x"]))
def test_hostile_boundary_files_are_refused_never_a_server_error(
    client: TestClient, container: Container, rings: list[list[tuple[float, float]]], code: str
) -> None:
    """Degenerate, non-finite, huge and antimeridian-crossing polygons: a 4xx (or a dry-run report), never a
    5xx, and no generation is stored."""
    features = [
        {
            "type": "Feature",
            "properties": {"code": code, "name": "测试", "level": "county", "parent": ""},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[list(p) for p in r] + ([list(r[0])] if r else [])],
            },
        }
        for r in rings
    ]
    raw = json.dumps({"type": "FeatureCollection", "features": features}, allow_nan=True).encode()
    before = count(container, m.GridGeneration.__table__)
    r = client.post(
        "/api/v1/grids/import",
        files={"file": ("bad.geojson", raw, "application/geo+json")},
        data={"dry_run": "false"},
        headers=login(client, "admin"),
    )
    assert r.status_code < 500, r.text
    assert r.status_code in (200, 201, 400, 413, 422)
    if r.status_code != 201:
        assert count(container, m.GridGeneration.__table__) == before
