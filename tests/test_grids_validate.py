"""Must show 1: one crafted bad set per validation class and the report each gives."""

from __future__ import annotations

from dataclasses import replace

import pytest
import shapely
from shapely.geometry import Polygon, box

from fixtures.subdivide import subdivide_county
from grids.validate import BoundaryUnit, area_m2, validate_units
from tests.grids_sets import WEST, by_code, square_county, with_geometry

GRID_A = "369901001001001"  # south-west grid of the west township
GRID_B = "369901001001002"  # its east neighbour (same community)
COMMUNITY = "369901001001"


def _only(report, check):  # type: ignore[no-untyped-def]
    found = [i for i in report.issues if i.check == check]
    assert found, f"no {check} in {[i.check for i in report.issues]}"
    return found


def test_clean_square_county_is_valid() -> None:
    report = validate_units(square_county())
    assert report.ok and report.issues == []
    assert report.units == {"county": 1, "township": 2, "community": 4, "grid": 8}


def test_three_real_counties_validate_clean() -> None:
    units = [
        BoundaryUnit(u.code, u.name, u.level, u.parent, u.geometry)
        for adcode in ("360102", "360103", "360104")
        for u in subdivide_county(adcode, townships=4)
    ]
    report = validate_units(units)
    assert report.ok, [i.message for i in report.errors]


def test_self_intersection_reports_where_and_the_repaired_shape() -> None:
    a = by_code(square_county(), GRID_A).geometry
    minx, miny, maxx, maxy = a.bounds
    bowtie = Polygon([(minx, miny), (maxx, maxy), (maxx, miny), (minx, maxy)])
    report = validate_units(with_geometry(square_county(), GRID_A, bowtie))
    assert not report.ok
    (issue,) = _only(report, "invalid_geometry")
    assert issue.codes == (GRID_A,)
    assert "Self-intersection" in issue.message
    cx, cy = (minx + maxx) / 2, (miny + maxy) / 2
    assert issue.location == pytest.approx((cx, cy), abs=1e-9)
    assert issue.repaired is not None and issue.repaired["type"] == "MultiPolygon"  # two triangles
    assert shapely.geometry.shape(issue.repaired).area == pytest.approx(a.area / 2)


def test_overlap_between_siblings_gives_area_and_location() -> None:
    a = by_code(square_county(), GRID_A).geometry
    minx, miny, maxx, maxy = a.bounds
    widened = box(minx, miny, maxx + (maxx - minx) * 0.1, maxy)  # eats 10 % of the neighbour
    report = validate_units(with_geometry(square_county(), GRID_A, widened))
    (issue,) = _only(report, "overlap")
    assert set(issue.codes) == {GRID_A, GRID_B}
    assert issue.area_m2 == pytest.approx(
        area_m2(box(maxx, miny, maxx + (maxx - minx) * 0.1, maxy)), rel=1e-6
    )
    assert shapely.box(maxx, miny, maxx + (maxx - minx) * 0.1, maxy).contains(shapely.Point(issue.location))
    # The widened grid also sticks out of nothing (its parent still covers it), so overlap is the error.
    assert {i.check for i in report.errors} == {"overlap"}


def test_gap_between_siblings_gives_area_and_location() -> None:
    a = by_code(square_county(), GRID_A).geometry
    minx, miny, maxx, maxy = a.bounds
    shrunk = box(minx, miny, maxx - (maxx - minx) * 0.2, maxy)
    report = validate_units(with_geometry(square_county(), GRID_A, shrunk))
    (issue,) = _only(report, "gap")
    assert issue.codes == (COMMUNITY,)
    assert issue.area_m2 == pytest.approx(
        area_m2(box(maxx - (maxx - minx) * 0.2, miny, maxx, maxy)), rel=1e-6
    )
    assert 430_000 < issue.area_m2 < 440_000  # 0.002° x 0.02° at 28.6°N
    assert box(maxx - (maxx - minx) * 0.2, miny, maxx, maxy).contains(shapely.Point(issue.location))


def test_tolerance_lets_a_hairline_gap_through_as_valid() -> None:
    a = by_code(square_county(), GRID_A).geometry
    minx, miny, maxx, maxy = a.bounds
    hairline = box(minx, miny, maxx - 1e-9, maxy)  # ~0.1 mm wide: ~0.2 m² over 2 km
    assert validate_units(with_geometry(square_county(), GRID_A, hairline), tolerance_m2=1.0).ok
    assert not validate_units(with_geometry(square_county(), GRID_A, hairline), tolerance_m2=0.01).ok


def test_child_outside_parent() -> None:
    a = by_code(square_county(), GRID_A).geometry
    minx, miny, maxx, maxy = a.bounds
    overhang = box(minx - 0.001, miny, maxx, maxy)  # west edge of the county pushed ~100 m out
    report = validate_units(with_geometry(square_county(), GRID_A, overhang))
    issues = _only(report, "outside_parent")
    assert issues[0].codes == (GRID_A, COMMUNITY)
    assert issues[0].area_m2 == pytest.approx(area_m2(box(minx - 0.001, miny, minx, maxy)), rel=1e-6)
    assert issues[0].location[0] < WEST


def test_duplicate_code() -> None:
    units = square_county()
    twin = replace(by_code(units, GRID_B), code=GRID_A, row=99)
    report = validate_units([u for u in units if u.code != GRID_B] + [twin])
    (issue,) = _only(report, "duplicate_code")
    assert issue.codes == (GRID_A,) and "99" in issue.message


@pytest.mark.parametrize("geometry", [None, Polygon()])
def test_empty_geometry(geometry) -> None:  # type: ignore[no-untyped-def]
    report = validate_units(with_geometry(square_county(), GRID_A, geometry))
    (issue,) = _only(report, "empty_geometry")
    assert issue.codes == (GRID_A,)
    assert "gap" in report.checks()  # and the hole it leaves in the community is reported too


def test_projected_coordinates_are_a_wrong_crs() -> None:
    # The same county in metres (as if exported in a projected CRS and read without it).
    units = [
        replace(u, geometry=shapely.affinity.scale(u.geometry, 111_320, 111_320, origin=(0, 0)))
        for u in square_county()
    ]
    report = validate_units(units)
    assert {i.check for i in report.errors} >= {"wrong_crs"}
    assert "declare the file's CRS" in _only(report, "wrong_crs")[0].message


@pytest.mark.parametrize(
    ("code", "why"),
    [
        ("36990100100100X", "must be 15 digits"),
        ("3699010010010011", "must be 15 digits"),
        ("369901002001001", "parent"),
    ],
)
def test_malformed_codes(code: str, why: str) -> None:
    units = [replace(u, code=code) if u.code == GRID_A else u for u in square_county()]
    (issue,) = _only(validate_units(units), "malformed_code")
    assert why in issue.message


def test_missing_level_and_missing_parent() -> None:
    units = [u for u in square_county() if u.level != "community"]
    report = validate_units(units)
    assert "missing_parent" in report.checks()  # grids point at communities that are not there
    assert "missing_level" in report.checks()  # townships without communities
    skipped = [replace(u, parent="369901001") if u.code == GRID_A else u for u in square_county()]
    (issue,) = [i for i in validate_units(skipped).issues if i.check == "missing_level"]
    assert "has a township as parent" in issue.message


def test_no_grid_level_at_all() -> None:
    report = validate_units([u for u in square_county() if u.level != "grid"])
    assert any(i.message == "the file has no grid level" for i in report.errors)


def test_warnings_do_not_refuse() -> None:
    units = [replace(u, name="") if u.code == GRID_A else u for u in square_county()]
    report = validate_units(units)
    assert report.ok and report.checks() == {"missing_name"}


def test_multipolygon_grid_with_a_hole_filled_by_its_sibling_is_valid() -> None:
    units = square_county()
    a, b = by_code(units, GRID_A).geometry, by_code(units, GRID_B).geometry
    minx, miny, maxx, maxy = b.bounds
    island = box(minx + 0.002, miny + 0.002, minx + 0.004, miny + 0.004)  # A owns an island inside B
    units = with_geometry(units, GRID_A, shapely.MultiPolygon([a, island]))
    units = with_geometry(units, GRID_B, b.difference(island))
    report = validate_units(units)
    assert report.ok, [i.message for i in report.issues]
