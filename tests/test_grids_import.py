"""Boundary files in, WGS-84 out (Must show 4 for the datums), in every format a county GIS tool exports."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import shapely

from grids.coords import (
    bd09_to_gcj02,
    bd09_to_gcj02_array,
    bd09_to_wgs84_array,
    gcj02_to_bd09,
    gcj02_to_wgs84,
    to_wgs84,
    transform_geometry_to_wgs84,
    transform_geometry_wgs84_to_gcj02,
    wgs84_to_gcj02,
    wgs84_to_gcj02_array,
)
from grids.importer import BoundaryFileError, read_boundary_bytes, read_boundary_file, write_boundary_file
from grids.validate import validate_units
from tests.grids_sets import square_county, write_geojson

# Published reference pairs, as used by the test suites of the widely used coordtransform implementations.
WGS_TO_GCJ = [((116.404, 39.915), (116.41024449916938, 39.91640428150164))]
GCJ_TO_BD = [((116.404, 39.915), (116.41036949371029, 39.92133699351021))]
BD_TO_GCJ = [((116.404, 39.915), (116.39762729119315, 39.90865673957631))]
# One point through all three datums (WGS-84 → GCJ-02 → BD-09), from a published CLI test.
CHAIN = (
    (121.0917077, 30.6107779),
    (121.09626935575027, 30.608604331756705),
    (121.10271732371203, 30.61484572185035),
)


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    dx = (a[0] - b[0]) * 111_320 * np.cos(np.radians(a[1]))
    return float(np.hypot(dx, (a[1] - b[1]) * 111_320))


# The coordtransform pairs agree to 1e-9°; the CLI chain uses a slightly different constant set (~1 cm).
@pytest.mark.parametrize(("wgs", "gcj", "tol"), [(*WGS_TO_GCJ[0], 1e-9), (*CHAIN[:2], 1e-6)])
def test_wgs84_to_gcj02_reference_pairs(wgs, gcj, tol) -> None:  # type: ignore[no-untyped-def]
    assert wgs84_to_gcj02(*wgs) == pytest.approx(gcj, abs=tol)


@pytest.mark.parametrize(("gcj", "bd", "tol"), [(*GCJ_TO_BD[0], 1e-9), (*CHAIN[1:], 1e-6)])
def test_gcj02_to_bd09_reference_pairs(gcj, bd, tol) -> None:  # type: ignore[no-untyped-def]
    assert gcj02_to_bd09(*gcj) == pytest.approx(bd, abs=tol)


@pytest.mark.parametrize(("bd", "gcj"), BD_TO_GCJ)
def test_bd09_to_gcj02_reference_pairs(bd, gcj) -> None:  # type: ignore[no-untyped-def]
    assert bd09_to_gcj02(*bd) == pytest.approx(gcj, abs=1e-9)
    lon, lat = bd09_to_gcj02_array([bd[0]], [bd[1]])
    assert (lon[0], lat[0]) == pytest.approx(gcj, abs=1e-12)


def test_bd09_chain_back_to_wgs84_within_a_metre() -> None:
    wgs, _gcj, bd = CHAIN
    assert _metres(to_wgs84(*bd, coord_sys="bd09"), wgs) < 1.0
    lon, lat = bd09_to_wgs84_array([bd[0]], [bd[1]])
    assert _metres((lon[0], lat[0]), wgs) < 1.0


def test_round_trips_over_jiangxi_stay_under_a_metre() -> None:
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(113.5, 118.5, 2000), rng.uniform(24.5, 30.1, 2000)
    worst_gcj = worst_bd = 0.0
    for x, y in zip(lon, lat, strict=True):
        worst_gcj = max(worst_gcj, _metres(gcj02_to_wgs84(*wgs84_to_gcj02(x, y)), (x, y)))
        worst_bd = max(
            worst_bd, _metres(to_wgs84(*gcj02_to_bd09(*wgs84_to_gcj02(x, y)), coord_sys="bd09"), (x, y))
        )
    assert worst_gcj < 0.01  # the iterative inverse is exact to well under a centimetre
    assert worst_bd < 1.0
    g_lon, g_lat = wgs84_to_gcj02_array(lon, lat)
    assert float(np.max(np.hypot(g_lon - lon, g_lat - lat))) > 1e-3  # the offset is real (hundreds of m)


# --------------------------------------------------------------------------- files


def _same_geometries(units, expected, tolerance: float = 1e-9) -> None:  # type: ignore[no-untyped-def]
    got = {u.code: u.geometry for u in units}
    for u in expected:
        assert shapely.equals_exact(got[u.code].normalize(), u.geometry.normalize(), tolerance), u.code


def test_geojson_reads_with_properties_and_validates(tmp_path: Path) -> None:
    units = read_boundary_file(write_geojson(square_county(), tmp_path / "set.geojson"))
    assert [(u.code, u.level, u.parent) for u in units][:2] == [
        ("369901", "county", None),
        ("369901001", "township", "369901"),
    ]
    assert validate_units(units).ok
    _same_geometries(units, square_county())


@pytest.mark.parametrize("suffix", [".gpkg", ".zip", ".geojson"])
def test_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    original = square_county()
    path = tmp_path / f"set{suffix}"
    write_boundary_file(path, ((u.code, u.name, u.level, u.parent, u.geometry) for u in original))
    if suffix == ".zip":
        assert any(n.endswith(".shp") for n in zipfile.ZipFile(path).namelist())
    units = read_boundary_file(path)
    assert {u.code: u.name for u in units} == {u.code: u.name for u in original}  # Chinese names survive
    _same_geometries(units, original)


def test_projected_crs_in_the_file_is_converted(tmp_path: Path) -> None:
    original = square_county()
    frame = gpd.GeoDataFrame(
        {"code": [u.code for u in original], "name": [u.name for u in original], "level": [u.level for u in original],
         "parent": [u.parent or "" for u in original]},
        geometry=[u.geometry for u in original], crs="EPSG:4326",
    ).to_crs("EPSG:32650")  # fmt: skip  # UTM 50N, metres
    frame.to_file(tmp_path / "utm.gpkg")
    units = read_boundary_file(tmp_path / "utm.gpkg")
    _same_geometries(units, original, tolerance=1e-7)  # densification-free reprojection: vertices exact
    assert validate_units(units, tolerance_m2=1.0).ok


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_declared_crs_for_a_file_without_one(tmp_path: Path) -> None:
    original = square_county()
    frame = gpd.GeoDataFrame(
        {"code": [u.code for u in original], "name": [u.name for u in original], "level": [u.level for u in original],
         "parent": [u.parent or "" for u in original]},
        geometry=[u.geometry for u in original], crs="EPSG:4326",
    ).to_crs("EPSG:4547")  # fmt: skip  # CGCS2000 3-degree GK CM 114E, what county GIS offices use
    path = tmp_path / "nocrs.gpkg"
    frame.set_crs(None, allow_override=True).to_file(path)
    with pytest.raises(BoundaryFileError) as refused:
        read_boundary_file(path)
    assert refused.value.code == "missing_crs"
    _same_geometries(read_boundary_file(path, crs="EPSG:4547"), original, tolerance=1e-7)


def test_projected_geojson_without_crs_is_refused_as_wrong_crs(tmp_path: Path) -> None:
    frame = gpd.GeoDataFrame(
        {"code": ["369901"], "name": ["x"], "level": ["county"], "parent": [""]},
        geometry=[square_county()[0].geometry], crs="EPSG:4326",
    ).to_crs("EPSG:3857")  # fmt: skip
    raw = json.loads(frame.to_json())
    raw.pop("crs", None)
    path = tmp_path / "metres.geojson"
    path.write_text(json.dumps(raw))
    report = validate_units(read_boundary_file(path))
    assert not report.ok and "wrong_crs" in report.checks()


def test_gcj02_declared_file_is_shifted_to_wgs84(tmp_path: Path) -> None:
    original = square_county()
    shifted = [
        type(u)(u.code, u.name, u.level, u.parent, transform_geometry_wgs84_to_gcj02(u.geometry), u.row)
        for u in original
    ]
    path = write_geojson(shifted, tmp_path / "amap.geojson")
    as_is = read_boundary_file(path)
    converted = read_boundary_file(path, coord_sys="gcj02")
    # Read as WGS-84 the set would be ~500 m off; declared GCJ-02 it is back within millimetres.
    assert shapely.distance(as_is[0].geometry.centroid, original[0].geometry.centroid) > 0.003
    _same_geometries(converted, original, tolerance=1e-8)


def test_bd09_geometry_conversion_matches_the_point_formula() -> None:
    square = shapely.box(116.40, 39.91, 116.41, 39.92)
    moved = transform_geometry_to_wgs84(square, "bd09")
    for (x, y), (mx, my) in zip(square.exterior.coords, moved.exterior.coords, strict=True):
        assert (mx, my) == pytest.approx(to_wgs84(x, y, "bd09"), abs=1e-12)


def test_unreadable_uploads_are_refused_with_a_reason() -> None:
    with pytest.raises(BoundaryFileError) as e:
        read_boundary_bytes(b"not json", "x.geojson")
    assert e.value.code == "unreadable_file"
    with pytest.raises(BoundaryFileError) as e:
        read_boundary_bytes(b"", "x.kml")
    assert e.value.code == "unsupported_format"
    with pytest.raises(BoundaryFileError) as e:
        read_boundary_bytes(b'{"type":"FeatureCollection","features":[{"type":"Feature","properties":{"code":"1"},'
                            b'"geometry":{"type":"Point","coordinates":[1,2]}}]}', "x.geojson")  # fmt: skip
    assert e.value.code == "missing_property"
