"""Startup: from process start to `/healthz` 200 with the province grid set (≥ 50,000 grids) loaded and active.

The province file (fixtures/province.py, as bench/geofence.py uses it) is generated once into var/ and imported
once (`griddispatch grids import`) into a cached database under var/; each measurement copies that database
into a fresh data directory and times `griddispatch serve` (tests/server.py) until `/healthz` answers 200 and
reports the grid count. --quick uses a smaller multi-county set instead (said in the figure's note).

Baseline in the same run: the same server on the demo county alone. Target: ≤ 5 s.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import Figure, demo_database
from tests.server import ServerProcess

VAR = Path(__file__).resolve().parents[1] / "var"
PROVINCE_FILE = VAR / "jiangxi-grids.gpkg"  # shared with bench/geofence.py
QUICK_COUNTIES = ["360102", "360103", "360104", "360111", "360112", "360113"]
TARGET_S = 5.0


def _write_counties(path: Path, counties: list[str]) -> None:
    import geopandas as gpd

    from fixtures.province import province_units

    rows = [
        {"code": u.code, "name": u.name, "level": u.level, "parent": u.parent or "", "geometry": u.geometry}
        for u in province_units(counties=counties)
    ]
    gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326").to_file(path, engine="pyogrio")


def grid_file(quick: bool) -> Path:
    """The boundary file, generated when missing (the province takes a minute or more)."""
    VAR.mkdir(exist_ok=True)
    if quick:
        path = VAR / "bench-counties-quick.gpkg"
        if not path.exists():
            _write_counties(path, QUICK_COUNTIES)
        return path
    if not PROVINCE_FILE.exists():
        from fixtures.province import write_province

        print(f"generating the province grid set into {PROVINCE_FILE} (once) …", flush=True)
        write_province(PROVINCE_FILE)
    return PROVINCE_FILE


def imported_database(source: Path) -> Path:
    """The demo database with `source` imported and active, cached next to the file."""
    cached = source.with_suffix(".imported.sqlite3")
    if cached.exists() and cached.stat().st_mtime >= source.stat().st_mtime:
        return cached
    work = Path(tempfile.mkdtemp(prefix="gd-bench-import-"))
    shutil.copy(demo_database(), work / "griddispatch.sqlite3")
    env = {**os.environ, "GRIDDISPATCH_DATA_DIR": str(work)}
    subprocess.run(
        [sys.executable, "-m", "dispatch.cli", "grids", "import", str(source), "--note", "bench province"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    import sqlite3

    with sqlite3.connect(work / "griddispatch.sqlite3") as con:  # one file, no WAL beside it
        con.execute("pragma wal_checkpoint(truncate)")
    shutil.copy(work / "griddispatch.sqlite3", cached)
    shutil.rmtree(work, ignore_errors=True)
    return cached


def time_start(database: Path, tag: str) -> tuple[float, int]:
    """Seconds from launching `griddispatch serve` to /healthz 200, and the grids it reported."""
    data = Path(tempfile.mkdtemp(prefix=f"gd-bench-startup-{tag}-"))
    shutil.copy(database, data / "griddispatch.sqlite3")
    server = ServerProcess(data, access_log="false", log_json="false")
    started = time.perf_counter()
    server.launch()
    try:
        while True:
            assert server.proc is not None
            if server.proc.poll() is not None:
                raise RuntimeError(server.log.read_text()[-2000:])
            try:
                r = httpx.get(server.url + "/healthz", timeout=1)
                if r.status_code == 200:
                    return time.perf_counter() - started, int(r.json()["grids"])
            except httpx.HTTPError:
                pass
            if time.perf_counter() - started > 120:
                raise RuntimeError("server did not start in 120 s")
            time.sleep(0.02)
    finally:
        server.stop()
        shutil.rmtree(data, ignore_errors=True)


def run(quick: bool = False) -> list[Figure]:
    source = grid_file(quick)
    database = imported_database(source)
    repeat = 1 if quick else 3
    demo = [time_start(demo_database(), "demo") for _ in range(repeat)]
    big = [time_start(database, "province") for _ in range(repeat)]
    seconds = statistics.median(t for t, _ in big)
    grids = big[0][1]
    what = f"quick: {len(QUICK_COUNTIES)} counties, not the province" if quick else "the Jiangxi province set"
    return [
        Figure(
            f"startup: province set to /healthz ({grids:,} grids)",
            seconds,
            "s",
            f"demo county only ({demo[0][1]} grids)",
            statistics.median(t for t, _ in demo),
            f"≤ {TARGET_S:g} s",
            seconds <= TARGET_S,
            f"{what}; median of {repeat} starts each",
        )
    ]


if __name__ == "__main__":
    for f in run(quick="--quick" in sys.argv):
        print(f.as_dict())
