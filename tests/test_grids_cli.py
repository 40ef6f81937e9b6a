"""`griddispatch grids check|import|list|diff|export|activate` on a real SQLite file, and the province fixture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dispatch.cli import app
from fixtures.province import county_plan, province_units
from grids.importer import read_boundary_file
from grids.validate import BoundaryUnit, validate_units
from tests.grids_sets import by_code, square_county, with_geometry, write_geojson

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GRIDDISPATCH_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("GRIDDISPATCH_DEMO", "false")
    monkeypatch.delenv("GRIDDISPATCH_DATABASE_URL", raising=False)
    (tmp_path / "var").mkdir()
    return tmp_path


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["grids", *args])
    return result.exit_code, result.output


def test_check_prints_the_report_and_fails_on_errors(env: Path) -> None:
    units = square_county()
    a = by_code(units, "369901001001001").geometry
    bad = write_geojson(with_geometry(units, "369901001001001", a.buffer(0.001)), env / "bad.geojson")
    code, out = _run("check", str(bad), "--json")
    report = json.loads(out[out.index("{") :])
    assert code == 1 and not report["ok"]
    assert {"overlap", "outside_parent"} <= {i["check"] for i in report["issues"]}
    code, out = _run("check", str(write_geojson(units, env / "good.geojson")))
    assert code == 0 and "valid" in out


def test_import_list_diff_export_activate(env: Path) -> None:
    first = write_geojson(square_county(), env / "v1.geojson")
    code, out = _run("import", str(first), "--note", "v1")
    assert code == 0, out
    assert "generation 1 is active" in out

    moved = square_county()
    a = by_code(moved, "369901001001001").geometry
    b = by_code(moved, "369901001001002").geometry
    shift = 0.002  # move the shared edge of two grids 200 m east
    import shapely

    moved = with_geometry(
        moved, "369901001001001", shapely.box(a.bounds[0], a.bounds[1], a.bounds[2] + shift, a.bounds[3])
    )
    moved = with_geometry(
        moved, "369901001001002", shapely.box(b.bounds[0] + shift, b.bounds[1], b.bounds[2], b.bounds[3])
    )
    code, out = _run("import", str(write_geojson(moved, env / "v2.geojson")), "--no-activate")
    assert code == 0, out

    code, out = _run("list")
    assert code == 0 and "v1" in out

    code, out = _run("diff", "1", "2", "--json")
    diff = json.loads(out)
    assert {d["code"] for d in diff["reshaped"]} == {"369901001001001", "369901001001002"}
    assert diff["added"] == [] and diff["removed"] == []

    out_file = env / "export.gpkg"
    code, out = _run("export", str(out_file), "--generation", "2", "--level", "grid")
    assert code == 0, out
    exported = read_boundary_file(out_file)
    assert len(exported) == 8 and {u.level for u in exported} == {"grid"}

    code, out = _run("activate", "2")
    assert code == 0
    code, out = _run("list")
    assert "●" in out.splitlines()[[i for i, line in enumerate(out.splitlines()) if " 2 " in line][0]]


def test_a_refused_import_stores_nothing(env: Path) -> None:
    good = write_geojson(square_county(), env / "v1.geojson")
    assert _run("import", str(good))[0] == 0
    empty = write_geojson(with_geometry(square_county(), "369901001001001", None), env / "bad.geojson")
    code, out = _run("import", str(empty))
    assert code == 1 and "refused" in out
    code, out = _run("list")
    assert " 2 " not in out


def test_province_fixture_scales_with_density_and_counties_differ() -> None:
    counties = ["360102", "360103"]
    units = list(province_units(counties=counties, grids_per_km2=2.0))
    grids = [u for u in units if u.level == "grid"]
    assert {u.code[:6] for u in grids} == set(counties)
    report = validate_units(BoundaryUnit(u.code, u.name, u.level, u.parent, u.geometry) for u in units)
    assert report.ok, [i.message for i in report.errors]
    sparse = [u for u in province_units(counties=counties, grids_per_km2=0.5) if u.level == "grid"]
    assert len(grids) > 2 * len(sparse)
    assert county_plan("360102", 2.0) < county_plan("360121", 2.0)  # 南昌县 is far bigger than 东湖区
    # The adcode is part of the seed: the two districts' township layouts are not one stamped pattern.
    names = {
        u.code[:6]: [t.name for t in units if t.level == "community" and t.code.startswith(u.code[:6])]
        for u in grids
    }
    assert names["360102"][:5] != names["360103"][:5]
