"""The lattice geofence answers exactly what the plain STRtree rule answers, and the routing rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, box

from fixtures.subdivide import subdivide_county
from grids.directory import JurisdictionTree, UnitInfo
from grids.index import GridIndex, ground_distance_m
from tests.grids_sets import SOUTH, WEST, square_county


@pytest.fixture(scope="module")
def two_counties() -> GridIndex:
    """Two real neighbouring districts (东湖区, 西湖区): irregular grids, a shared county line."""
    grids = [u for adcode in ("360102", "360103") for u in subdivide_county(adcode) if u.level == "grid"]
    return GridIndex([g.code for g in grids], [g.geometry for g in grids])


def _reference(index: GridIndex, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The documented rule, straight: every grid that intersects the point, smallest code wins."""
    point_i, grid_i = index.tree.query(shapely.points(x, y), predicate="intersects")
    best = np.full(len(x), np.iinfo(np.int64).max)
    np.minimum.at(best, point_i, grid_i)
    best[best == np.iinfo(np.int64).max] = -1
    return best


def test_random_points_match_the_exact_rule(two_counties: GridIndex) -> None:
    rng = np.random.default_rng(7)
    minx, miny, maxx, maxy = shapely.total_bounds(two_counties.geometries)
    x, y = rng.uniform(minx - 0.01, maxx + 0.01, 100_000), rng.uniform(miny - 0.01, maxy + 0.01, 100_000)
    got = two_counties.positions(x, y)
    assert np.array_equal(got, _reference(two_counties, x, y))
    assert 0.2 < np.mean(got >= 0) < 0.9  # both inside and outside points were exercised


def test_vertices_and_edge_midpoints_follow_the_smallest_code_rule(two_counties: GridIndex) -> None:
    coords = shapely.get_coordinates(two_counties.geometries)
    mids = (coords[1:] + coords[:-1]) / 2
    for pts in (coords, mids):
        got = two_counties.positions(pts[:, 0], pts[:, 1])
        assert np.array_equal(got, _reference(two_counties, pts[:, 0], pts[:, 1]))
    # And the one-point path agrees with the vectorised one.
    for lon, lat in coords[:: max(1, len(coords) // 2000)]:
        assert two_counties.locate(lon, lat) == two_counties.locate_exact(lon, lat)


def test_shared_edge_goes_to_the_smallest_code() -> None:
    index = GridIndex(["369901001001002", "369901001001001"], [box(1, 0, 2, 1), box(0, 0, 1, 1)])
    assert index.locate(1.0, 0.5) == "369901001001001"  # on the shared edge
    assert index.locate(1.0, 1.0) == "369901001001001"  # on the shared corner
    assert index.locate(1.5, 0.5) == "369901001001002"
    assert index.locate(2.5, 0.5) is None
    assert index.locate(math.nan, 0.5) is None


def test_holes_and_multipolygons() -> None:
    donut = box(0, 0, 3, 3).difference(box(1, 1, 2, 2))
    islands = MultiPolygon([box(1.25, 1.25, 1.75, 1.75), box(5, 5, 6, 6)])
    index = GridIndex(["369901001001001", "369901001001002"], [donut, islands])
    assert index.locate(0.5, 0.5) == "369901001001001"
    assert index.locate(1.1, 1.1) is None  # in the hole, not on an island
    assert index.locate(1.5, 1.5) == "369901001001002"
    assert index.locate(5.5, 5.5) == "369901001001002"
    assert index.locate(4.0, 4.0) is None
    x, y = np.array([0.5, 1.1, 1.5, 5.5, 4.0]), np.array([0.5, 1.1, 1.5, 5.5, 4.0])
    assert list(index.locate_many(x, y)) == [
        "369901001001001",
        None,
        "369901001001002",
        "369901001001002",
        None,
    ]


def test_empty_index_locates_nothing() -> None:
    index = GridIndex([], [])
    assert index.locate(115.9, 28.6) is None and index.nearest(115.9, 28.6) is None
    assert list(index.positions([1.0], [2.0])) == [-1]


def _tree() -> JurisdictionTree:
    return JurisdictionTree(
        1, [UnitInfo(u.code, u.name, u.level, u.parent, u.geometry) for u in square_county()]
    )


def test_route_inside_a_grid() -> None:
    routing = _tree().route(WEST + 0.001, SOUTH + 0.001)
    assert routing.grid_code == "369901001001001" and not routing.near_boundary and routing.distance_m == 0


def test_route_just_outside_snaps_to_the_nearest_grid_and_flags_it() -> None:
    metres_per_deg_lon = 111_320 * math.cos(math.radians(SOUTH + 0.001))
    lon = WEST - 150 / metres_per_deg_lon  # 150 m west of the county line
    routing = _tree().route(lon, SOUTH + 0.001)
    assert routing.grid_code == "369901001001001" and routing.near_boundary
    assert routing.distance_m == pytest.approx(150, abs=0.5)


def test_route_far_outside_goes_to_triage_and_the_distance_is_configurable() -> None:
    metres_per_deg_lon = 111_320 * math.cos(math.radians(SOUTH + 0.001))
    lon = WEST - 250 / metres_per_deg_lon
    routing = _tree().route(lon, SOUTH + 0.001)
    assert routing.grid_code is None and not routing.near_boundary
    assert routing.distance_m == pytest.approx(250, abs=0.5)
    wide = JurisdictionTree(1, list(_tree().units.values()), near_boundary_m=300)
    assert wide.route(lon, SOUTH + 0.001).grid_code == "369901001001001"


def test_nearest_is_by_ground_distance_not_degrees() -> None:
    # At 60°N a degree of longitude is half a degree of latitude on the ground: the grid 0.15° east
    # (~8.3 km) is nearer than the one 0.1° north (~11 km), though farther in raw degrees.
    east = box(10.15, 59.9, 10.3, 60.0)
    north = box(9.9, 60.1, 10.05, 60.2)
    index = GridIndex(["369901001001001", "369901001001002"], [north, east])
    near = index.nearest(10.0, 60.0)
    assert near is not None and near.code == "369901001001002"
    assert near.distance_m == pytest.approx(ground_distance_m(east, 10.0, 60.0))
    assert near.distance_m == pytest.approx(0.15 * 111_320 * 0.5, rel=1e-3)


def test_the_lattice_answers_most_points_without_geometry() -> None:
    grids = [u for u in subdivide_county("360102") if u.level == "grid"]
    index = GridIndex([g.code for g in grids], [g.geometry for g in grids])
    lattice = index.lattice
    assert lattice is not None
    inside_cells = np.count_nonzero(lattice.cells >= 0)
    assert lattice.boundary_cells < inside_cells  # most of the county is answered by lookup
