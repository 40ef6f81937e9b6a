"""Synthetic county subdivision and GCJ-02 conversion."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, shape

from fixtures.subdivide import DATA_FILE, UnitSpec, load_county, subdivide_county
from grids.coords import (
    gcj02_to_wgs84,
    gcj02_to_wgs84_array,
    transform_geometry_gcj02_to_wgs84,
    transform_geometry_wgs84_to_gcj02,
    wgs84_to_gcj02,
    wgs84_to_gcj02_array,
)

CODE_LENGTH = {"county": 6, "township": 9, "community": 12, "grid": 15}
LOWER_LEVELS = ("township", "community", "grid")

# Reference pairs (WGS-84 lon, lat) -> (GCJ-02 lon, lat) from the eviltransform test suite.
PUBLISHED_PAIRS = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),  # Shanghai
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),  # Shenzhen
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),  # Beijing
]
NANCHANG_WGS84 = (115.8921, 28.6765)  # near 八一广场


@pytest.fixture(scope="module")
def units() -> list[UnitSpec]:
    return subdivide_county()


def _level(units: list[UnitSpec], level: str) -> list[UnitSpec]:
    return [u for u in units if u.level == level]


def _ground_distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[1] + b[1]) / 2)
    dx = math.radians(a[0] - b[0]) * math.cos(lat) * 6_371_000
    dy = math.radians(a[1] - b[1]) * 6_371_000
    return math.hypot(dx, dy)


# --------------------------------------------------------------------------- structure


def test_order_is_county_then_levels_parents_first(units):
    assert units[0].level == "county" and units[0].parent is None
    assert units[0].code == "360102" and units[0].name == "东湖区"
    ranks = [("county", *LOWER_LEVELS).index(u.level) for u in units]
    assert ranks == sorted(ranks)


def test_codes_follow_adcode_hierarchy(units):
    by_code = {u.code: u for u in units}
    assert len(by_code) == len(units)
    for unit in units:
        assert unit.code.isdigit() and len(unit.code) == CODE_LENGTH[unit.level]
        if unit.parent is not None:
            parent = by_code[unit.parent]
            assert unit.code.startswith(parent.code)
            assert CODE_LENGTH[unit.level] == CODE_LENGTH[parent.level] + 3


def test_names(units):
    townships = [u.name for u in _level(units, "township")]
    assert townships[:3] == ["公园街道", "滕王阁街道", "八一桥街道"]
    for township in _level(units, "township"):
        names = [u.name for u in units if u.parent == township.code]
        assert len(set(names)) == len(names)
        assert all(n.endswith("社区") for n in names)
    for grid in _level(units, "grid"):
        community = next(u for u in units if u.code == grid.parent)
        assert grid.name == f"{community.name}第{int(grid.code[-3:])}网格"


def test_grid_count_in_expected_range(units):
    n_townships = len(_level(units, "township"))
    assert n_townships == 10
    assert 10 * 3 <= len(_level(units, "community")) <= 10 * 5
    assert 10 * 3 * 3 <= len(_level(units, "grid")) <= 10 * 5 * 6


# --------------------------------------------------------------------------- geometry


def test_every_unit_is_a_valid_nonempty_polygon(units):
    for unit in units:
        g = unit.geometry
        assert g.geom_type in ("Polygon", "MultiPolygon")
        assert g.is_valid and not g.is_empty and g.area > 0


@pytest.mark.parametrize("level", LOWER_LEVELS)
def test_each_level_is_a_valid_coverage(units, level):
    assert shapely.coverage_is_valid([u.geometry for u in _level(units, level)])


@pytest.mark.parametrize("level", LOWER_LEVELS)
def test_each_level_covers_the_county(units, level):
    county_area = units[0].geometry.area
    layer = [u.geometry for u in _level(units, level)]
    assert shapely.union_all(layer).area == pytest.approx(county_area, rel=1e-9)
    assert sum(g.area for g in layer) == pytest.approx(county_area, rel=1e-9)


def test_children_lie_in_and_tile_their_parent(units):
    by_code = {u.code: u for u in units}
    for parent in units:
        kids = [u for u in units if u.parent == parent.code]
        if parent.level != "grid":
            assert kids, f"{parent.code} has no children"
        for kid in kids:
            assert parent.geometry.contains(kid.geometry.representative_point())
        if kids:
            assert sum(k.geometry.area for k in kids) == pytest.approx(parent.geometry.area, rel=1e-9)
    assert all(u.parent is None or u.parent in by_code for u in units)


def test_same_seed_gives_identical_wkb(units):
    again = subdivide_county()
    assert [(u.code, u.name, u.geometry.wkb) for u in again] == [
        (u.code, u.name, u.geometry.wkb) for u in units
    ]


def test_other_seed_gives_other_layout(units):
    other = subdivide_county(seed=7, townships=4, communities_per_township=(1, 2), grids_per_community=(1, 2))
    assert units[1].geometry.wkb != other[1].geometry.wkb
    assert len(_level(other, "township")) == 4


def test_county_is_converted_to_wgs84():
    name, county = load_county("360102")
    assert name == "东湖区"
    assert county.is_valid
    # 东湖区 lies around 115.9E 28.7N; the datum shift moves it by a few hundred metres.
    minx, miny, maxx, maxy = county.bounds
    assert 115.8 < minx < maxx < 116.0 and 28.6 < miny < maxy < 28.8
    back = transform_geometry_wgs84_to_gcj02(county)
    assert shapely.equals_exact(back, _raw_gcj02_county(), tolerance=1e-8)


def _raw_gcj02_county():
    features = json.loads(DATA_FILE.read_text(encoding="utf-8"))["features"]
    return shape(next(f["geometry"] for f in features if f["properties"]["adcode"] == "360102"))


def test_unknown_adcode_is_a_key_error():
    with pytest.raises(KeyError):
        load_county("999999")


# --------------------------------------------------------------------------- coordinates


@pytest.mark.parametrize(("wgs", "gcj"), PUBLISHED_PAIRS)
def test_published_pairs(wgs, gcj):
    assert wgs84_to_gcj02(*wgs) == pytest.approx(gcj, abs=1e-9)
    assert gcj02_to_wgs84(*gcj) == pytest.approx(wgs, abs=1e-9)


def test_nanchang_round_trip_and_offset_size():
    gcj = wgs84_to_gcj02(*NANCHANG_WGS84)
    back = gcj02_to_wgs84(*gcj)
    assert max(abs(back[0] - NANCHANG_WGS84[0]), abs(back[1] - NANCHANG_WGS84[1])) < 1e-7
    # GCJ-02 in Nanchang sits roughly 600 m south-east of WGS-84: "a few hundred metres".
    assert 200 < _ground_distance_m(NANCHANG_WGS84, gcj) < 1000
    assert gcj[0] > NANCHANG_WGS84[0]


def test_inverse_converges_below_1e_9_degrees_over_china():
    rng = np.random.default_rng(1)
    lon = rng.uniform(74, 135, 2000)
    lat = rng.uniform(18, 53, 2000)
    g_lon, g_lat = wgs84_to_gcj02_array(lon, lat)
    w_lon, w_lat = gcj02_to_wgs84_array(g_lon, g_lat)
    assert np.max(np.abs(w_lon - lon)) < 1e-9 and np.max(np.abs(w_lat - lat)) < 1e-9


@pytest.mark.parametrize("point", [(2.3522, 48.8566), (-74.006, 40.7128), (151.2093, -33.8688)])
def test_outside_china_passes_through(point):
    assert wgs84_to_gcj02(*point) == point
    assert gcj02_to_wgs84(*point) == point


def test_geometry_transform_matches_point_conversion():
    ring = [(115.89, 28.67), (115.91, 28.67), (115.91, 28.69), (115.89, 28.67)]
    converted = transform_geometry_gcj02_to_wgs84(Polygon(ring))
    expected = [gcj02_to_wgs84(*p) for p in ring]
    assert np.allclose(shapely.get_coordinates(converted), expected, atol=1e-12, rtol=0)
