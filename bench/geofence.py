"""Geofence benchmark: 1,000,000 random points against the province grid set (issue 3, "Must show" 3).

    .venv/bin/python -m bench.geofence [boundary file] [--points N]

The boundary file defaults to var/jiangxi-grids.gpkg, generated with fixtures.province when missing (~1 min).
Prints index build time and memory, vectorised points/s of GridIndex and of geopandas.sjoin on the same
points in the same run (the baseline, its spatial index built before timing), their ratio, agreement between
the two, and single-point locate p50/p99. Timings are medians of three runs; compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import shapely

from grids.index import GridIndex

DEFAULT_FILE = Path("var/jiangxi-grids.gpkg")
TARGET_RATIO = 2.0
TARGET_P99_US = 50.0


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _median_seconds(run, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--single", type=int, default=100_000, help="single-point lookups timed one by one")
    args = parser.parse_args(argv)
    if not args.path.exists():
        from fixtures.province import write_province

        print(f"generating the province grid set into {args.path} …")
        args.path.parent.mkdir(parents=True, exist_ok=True)
        write_province(args.path)

    started = time.perf_counter()
    frame = gpd.read_file(args.path, engine="pyogrio", where="level = 'grid'")
    print(f"read {len(frame):,} grids in {time.perf_counter() - started:.1f} s")
    codes, geometries = list(frame["code"]), list(frame.geometry)

    rss_before = _rss_mb()
    started = time.perf_counter()
    index = GridIndex(codes, geometries)
    build_s = time.perf_counter() - started
    lattice = index.lattice
    assert lattice is not None
    print(
        f"GridIndex built in {build_s:.2f} s, +{_rss_mb() - rss_before:.0f} MB RSS; lattice "
        f"{lattice.cols}x{lattice.rows} cells of {lattice.size * 111_320:.0f} m, "
        f"{lattice.boundary_cells:,} boundary cells ({lattice.boundary_cells / lattice.cells.size:.1%})"
    )

    rng = np.random.default_rng(20261129)
    minx, miny, maxx, maxy = shapely.total_bounds(index.geometries)
    x = rng.uniform(minx, maxx, args.points)
    y = rng.uniform(miny, maxy, args.points)

    ours = index.positions(x, y)
    ours_s = _median_seconds(lambda: index.positions(x, y))

    grids = gpd.GeoDataFrame({"position": np.arange(len(index))}, geometry=index.geometries, crs="EPSG:4326")
    points = gpd.GeoDataFrame(geometry=shapely.points(x, y), crs="EPSG:4326")
    grids.sindex  # noqa: B018 - build the baseline's index before timing, as a warm server would have it
    joined = gpd.sjoin(points, grids, predicate="within", how="inner")
    sjoin_s = _median_seconds(lambda: gpd.sjoin(points, grids, predicate="within", how="inner"))

    reference = np.full(args.points, -1, dtype=np.int64)
    reference[joined.index.to_numpy()] = joined["position"].to_numpy()
    agree = float(np.mean(reference == ours))

    single = min(args.single, args.points)
    lookups = []
    for lon, lat in zip(x[:single].tolist(), y[:single].tolist(), strict=True):
        t0 = time.perf_counter_ns()
        index.locate(lon, lat)
        lookups.append(time.perf_counter_ns() - t0)
    p50, p99 = (float(v) / 1000 for v in np.percentile(lookups, [50, 99]))

    ours_rate, sjoin_rate = args.points / ours_s, args.points / sjoin_s
    ratio = ours_rate / sjoin_rate
    inside = float(np.mean(ours >= 0))
    print(f"{args.points:,} random points in the province bbox ({inside:.0%} inside a grid)")
    print(f"  GridIndex.positions   {ours_rate / 1e6:6.2f} M points/s  ({ours_s * 1000:.0f} ms)")
    print(f"  geopandas.sjoin       {sjoin_rate / 1e6:6.2f} M points/s  ({sjoin_s * 1000:.0f} ms)  baseline")
    print(f"  ratio                 {ratio:6.2f}x  (target >= {TARGET_RATIO:.0f}x)")
    print(
        f"  agreement with sjoin  {agree:.6f}  (differences only on shared edges, where sjoin 'within' is empty)"
    )
    print(
        f"  single point locate   p50 {p50:.1f} µs, p99 {p99:.1f} µs  (target p99 <= {TARGET_P99_US:.0f} µs)"
    )
    return {
        "ratio": ratio, "p50_us": p50, "p99_us": p99, "build_s": build_s, "agreement": agree,
        "ours_rate": ours_rate, "sjoin_rate": sjoin_rate, "grids": len(index), "points": args.points,
    }  # fmt: skip


def run(quick: bool = False) -> list:  # type: ignore[type-arg]
    """For the suite (bench/__main__.py): the numbers above as figures; --quick on a few counties."""
    from bench.common import Figure
    from bench.startup import grid_file

    path = grid_file(quick)
    got = main(
        [str(path), "--points", "100000" if quick else "1000000", "--single", "10000" if quick else "100000"]
    )
    where = f"{got['grids']:,} grids" + (" (quick: a few counties)" if quick else "")
    return [
        Figure(
            f"geofence: points/s ({where})", got["ours_rate"], "points/s", "geopandas.sjoin",
            got["sjoin_rate"], f"≥ {TARGET_RATIO:g}× baseline", got["ratio"] >= TARGET_RATIO,
            f"{got['points']:,} random points; agreement with sjoin {got['agreement']:.6f}",
        ),
        Figure(
            "geofence: single point p99", got["p99_us"], "µs", "single point p50", got["p50_us"],
            f"≤ {TARGET_P99_US:g} µs", got["p99_us"] <= TARGET_P99_US,
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    main()
