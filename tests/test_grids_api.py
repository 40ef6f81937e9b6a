"""Grid generations over HTTP: refused sets change nothing, activation is live, old cases keep their grid."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import shapely
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.app import create_app
from dispatch import models as m
from dispatch.bootstrap import Container
from fixtures.subdivide import subdivide_county
from grids.validate import BoundaryUnit
from tests.conftest import Demo
from tests.grids_sets import by_code, square_county, with_geometry, write_geojson

PASSWORD = "demo1234"


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container=container)) as c:
        yield c


def login(client: TestClient, user: str) -> dict[str, str]:
    r = client.post("/api/v1/auth/token", data={"username": user, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def geojson_bytes(units: list[BoundaryUnit], tmp_path: Path, name: str = "set.geojson") -> bytes:
    return write_geojson(units, tmp_path / name).read_bytes()


def upload(client: TestClient, headers: dict[str, str], data: bytes, name: str = "set.geojson", **form: str):  # type: ignore[no-untyped-def]
    return client.post(
        "/api/v1/grids/import", headers=headers, files={"file": (name, io.BytesIO(data))}, data=form
    )


def regridded_demo_county(seed: int) -> list[BoundaryUnit]:
    """东湖区 with different grid lines: what a county's yearly redraw looks like."""
    return [
        BoundaryUnit(u.code, u.name, u.level, u.parent, u.geometry)
        for u in subdivide_county("360102", seed=seed)
    ]


def report(client: TestClient, headers: dict[str, str], lon: float, lat: float) -> dict:
    body = {"lon": lon, "lat": lat, "category": "sanitation", "description": "垃圾满溢"}
    r = client.post("/api/v1/reports", headers=headers, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def _bad_sets() -> dict[str, list[BoundaryUnit]]:
    base = square_county()
    a = by_code(base, "369901001001001").geometry
    minx, miny, maxx, maxy = a.bounds
    bowtie = shapely.Polygon([(minx, miny), (maxx, maxy), (maxx, miny), (minx, maxy)])
    return {
        "invalid_geometry": with_geometry(base, "369901001001001", bowtie),
        "overlap": with_geometry(base, "369901001001001", shapely.box(minx, miny, maxx + 0.002, maxy)),
        "gap": with_geometry(base, "369901001001001", shapely.box(minx, miny, maxx - 0.002, maxy)),
        "outside_parent": with_geometry(base, "369901001001001", shapely.box(minx - 0.002, miny, maxx, maxy)),
        "duplicate_code": [*base, base[-1]],
        "empty_geometry": with_geometry(base, "369901001001001", None),
    }


@pytest.mark.parametrize("defect", sorted(_bad_sets()))
def test_a_bad_set_is_refused_and_the_active_generation_keeps_routing(
    client: TestClient, container: Container, demo: Demo, tmp_path: Path, defect: str
) -> None:
    admin = login(client, "admin")
    before = client.get("/api/v1/grids/generations", headers=admin).json()
    r = upload(client, admin, geojson_bytes(_bad_sets()[defect], tmp_path))
    assert r.status_code == 422
    assert r.json()["code"] == "invalid_boundaries"
    detail = r.json()["detail"]
    assert detail["ok"] is False and defect in {i["check"] for i in detail["issues"]}
    assert client.get("/api/v1/grids/generations", headers=admin).json() == before
    with container.db.read() as s:
        assert s.execute(select(m.Unit.generation).where(m.Unit.code == "369901")).first() is None
    lon, lat = demo.point_in(demo.grid)
    case = report(client, login(client, "dispatcher"), lon, lat)
    assert case["grid"]["code"] == demo.grid and case["grid"]["generation"] == before["active"]


def test_wrong_crs_upload_is_refused(client: TestClient, tmp_path: Path) -> None:
    metres = [
        BoundaryUnit(
            u.code,
            u.name,
            u.level,
            u.parent,
            shapely.affinity.scale(u.geometry, 111_320, 111_320, origin=(0, 0)),
        )
        for u in square_county()
    ]
    r = upload(client, login(client, "admin"), geojson_bytes(metres, tmp_path))
    assert r.status_code == 422 and "wrong_crs" in {i["check"] for i in r.json()["detail"]["issues"]}


def test_dry_run_reports_and_stores_nothing(client: TestClient, tmp_path: Path) -> None:
    admin = login(client, "admin")
    before = client.get("/api/v1/grids/generations", headers=admin).json()
    r = upload(client, admin, geojson_bytes(_bad_sets()["gap"], tmp_path), dry_run="true")
    assert r.status_code == 200 and r.json()["report"]["ok"] is False and r.json()["generation"] is None
    r = upload(client, admin, geojson_bytes(square_county(), tmp_path), dry_run="true")
    assert r.status_code == 200 and r.json()["report"]["ok"] is True
    assert client.get("/api/v1/grids/generations", headers=admin).json() == before


def test_only_an_admin_may_import(client: TestClient, tmp_path: Path) -> None:
    r = upload(client, login(client, "dispatcher"), geojson_bytes(square_county(), tmp_path))
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_unreadable_file_is_a_422_with_a_reason(client: TestClient) -> None:
    r = upload(client, login(client, "admin"), b"{not json", "x.geojson")
    assert r.status_code == 422 and r.json()["code"] == "unreadable_file"


def test_cases_keep_their_generation_and_new_reports_use_the_new_one(
    client: TestClient, container: Container, demo: Demo, tmp_path: Path
) -> None:
    """Must show 5: routed under N, still in its grid after N+1 is activated; a new report uses N+1."""
    admin, dispatcher = login(client, "admin"), login(client, "dispatcher")
    old_generation = container.tree.generation
    lon, lat = demo.point_in(demo.grid)
    first = report(client, dispatcher, lon, lat)
    assert first["grid"] == {
        "code": demo.grid,
        "generation": old_generation,
        "name": container.tree.name(demo.grid),
        "near_boundary": False,
    }

    r = upload(client, admin, geojson_bytes(regridded_demo_county(seed=7), tmp_path), note="2027 redraw")
    assert r.status_code == 201, r.text
    new_generation = r.json()["generation"]
    assert r.json()["activated"] and new_generation > old_generation
    assert container.tree.generation == new_generation  # swapped live, no restart
    with container.db.read() as s:
        events = s.execute(select(m.Event).order_by(m.Event.seq)).scalars().all()
    activated = events[-1]  # screens redraw their map on it, in seq order with the case events
    assert activated.type == "grids.activated" and activated.jurisdiction == ["360102"]
    assert activated.data == {
        "generation": new_generation,
        "previous": old_generation,
        "grids": len(container.tree.index),
    }
    assert activated.seq == events[-2].seq + 1

    expected = container.tree.locate(lon, lat)
    assert expected is not None and expected != demo.grid  # the redraw moved this point to another grid
    second = report(client, dispatcher, lon, lat)
    assert second["grid"]["generation"] == new_generation and second["grid"]["code"] == expected

    again = client.get(f"/api/v1/incidents/{first['id']}", headers=dispatcher).json()
    assert again["grid"]["code"] == demo.grid and again["grid"]["generation"] == old_generation
    with container.db.read() as s:
        row = s.get(m.Incident, first["id"])
        assert (row.grid_code, row.grid_generation) == (demo.grid, old_generation)

    past = client.get(
        "/api/v1/grids/locate",
        params={"lon": lon, "lat": lat, "generation": old_generation},
        headers=dispatcher,
    )
    assert past.status_code == 200 and past.json()["grid"]["code"] == demo.grid
    now = client.get("/api/v1/grids/locate", params={"lon": lon, "lat": lat}, headers=dispatcher)
    assert now.json()["grid"]["code"] == expected and now.json()["generation"] == new_generation

    diff = client.get(
        "/api/v1/grids/diff", params={"from": old_generation, "to": new_generation}, headers=admin
    ).json()
    assert diff["reshaped"] and all(d["changed_m2"] > 1 for d in diff["reshaped"])
    assert {d["code"] for d in diff["reshaped"]} | {d["code"] for d in diff["added"]} >= {expected}

    listed = client.get("/api/v1/grids/generations", headers=admin).json()
    assert listed["active"] == new_generation
    assert [g["note"] for g in listed["generations"] if g["id"] == new_generation] == ["2027 redraw"]

    back = client.post(f"/api/v1/grids/generations/{old_generation}/activate", headers=admin)
    assert back.status_code == 200 and container.tree.generation == old_generation
    assert report(client, dispatcher, lon, lat)["grid"]["code"] == demo.grid


def test_report_just_outside_the_county_is_routed_near_boundary(
    client: TestClient, container: Container, demo: Demo
) -> None:
    county = container.tree.units["360102"].geometry
    # Due east of the county's easternmost vertex, 120 m and 1 km out.
    east = max(shapely.get_coordinates(county), key=lambda c: c[0])
    metres_per_degree = 111_320 * math.cos(math.radians(east[1]))
    near = report(client, login(client, "dispatcher"), east[0] + 120 / metres_per_degree, east[1])
    assert near["grid"]["near_boundary"] is True and near["state"] != "triage"
    assert near["grid"]["code"] == container.tree.index.nearest(east[0], east[1]).code
    with container.db.read() as s:
        assert s.get(m.Incident, near["id"]).near_boundary is True
    far = report(client, login(client, "dispatcher"), east[0] + 1000 / metres_per_degree, east[1])
    assert far["grid"]["code"] is None and far["state"] == "triage" and far["grid"]["near_boundary"] is False


def test_geojson_by_level_parent_and_simplified(client: TestClient, container: Container, demo: Demo) -> None:
    headers = login(client, "dispatcher")
    townships = client.get("/api/v1/grids", params={"level": "township"}, headers=headers)
    assert townships.status_code == 200 and townships.headers["content-type"] == "application/geo+json"
    features = townships.json()["features"]
    assert len(features) == sum(u.level == "township" for u in container.tree.units.values())
    assert {f["properties"]["level"] for f in features} == {"township"}
    community = demo.grid[:12]
    grids = client.get("/api/v1/grids", params={"parent": community}, headers=headers).json()["features"]
    assert {f["properties"]["code"] for f in grids} == {
        c for c, u in container.tree.units.items() if u.parent == community
    }
    township = demo.grid[:9]
    below = client.get("/api/v1/grids", params={"under": township, "level": "grid"}, headers=headers).json()
    assert {f["properties"]["code"] for f in below["features"]} == {
        c for c, u in container.tree.units.items() if u.level == "grid" and c.startswith(township)
    }
    exact = client.get("/api/v1/grids", params={"level": "grid"}, headers=headers)
    simple = client.get("/api/v1/grids", params={"level": "grid", "simplify": 20}, headers=headers)
    assert len(simple.content) < len(exact.content) * 0.8
    shapes = [shapely.geometry.shape(f["geometry"]) for f in simple.json()["features"]]
    assert all(s.is_valid for s in shapes) and shapely.coverage_is_valid(shapes)  # no slivers on the map
    assert client.get("/api/v1/grids", params={"generation": 999}, headers=headers).status_code == 404
    assert (
        json.loads(client.get("/api/v1/grids", params={"level": "nope"}, headers=headers).content)["code"]
        == "validation_error"
    )


def test_near_boundary_flag_is_shown_when_the_case_is_read_back(
    client: TestClient, container: Container, demo: Demo
) -> None:
    county = container.tree.units["360102"].geometry
    east = max(shapely.get_coordinates(county), key=lambda c: c[0])
    headers = login(client, "dispatcher")
    case = report(client, headers, east[0] + 100 / (111_320 * math.cos(math.radians(east[1]))), east[1])
    assert (
        client.get(f"/api/v1/incidents/{case['id']}", headers=headers).json()["grid"]["near_boundary"] is True
    )
