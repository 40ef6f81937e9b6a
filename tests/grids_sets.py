"""Small hand-made boundary sets for the grids tests: a square county cut into halves, level by level."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import shapely
from shapely.geometry import box, mapping

from grids.validate import BoundaryUnit

# Inside 东湖区's neighbourhood, so points are in China and near the demo county.
WEST, SOUTH, SIZE = 115.95, 28.60, 0.04


def square_county(county: str = "369901", west: float = WEST, south: float = SOUTH) -> list[BoundaryUnit]:
    """county → 2 townships (west/east) → 2 communities each (south/north) → 2 grids each (west/east)."""
    # Every coordinate comes from one table, so neighbours share vertices bit for bit.
    xs = [round(west + k * SIZE / 4, 9) for k in range(5)]
    ys = [round(south + k * SIZE / 2, 9) for k in range(3)]
    units = [BoundaryUnit(county, "方块县", "county", None, box(xs[0], ys[0], xs[4], ys[2]), 1)]
    for t in range(2):
        t_code = f"{county}{t + 1:03d}"
        units.append(
            BoundaryUnit(
                t_code, f"第{t + 1}街道", "township", county, box(xs[2 * t], ys[0], xs[2 * t + 2], ys[2])
            )
        )
        for c in range(2):
            c_code = f"{t_code}{c + 1:03d}"
            units.append(
                BoundaryUnit(
                    c_code,
                    f"第{c + 1}社区",
                    "community",
                    t_code,
                    box(xs[2 * t], ys[c], xs[2 * t + 2], ys[c + 1]),
                )
            )
            for g in range(2):
                k = 2 * t + g
                units.append(
                    BoundaryUnit(
                        f"{c_code}{g + 1:03d}",
                        f"第{g + 1}网格",
                        "grid",
                        c_code,
                        box(xs[k], ys[c], xs[k + 1], ys[c + 1]),
                    )
                )
    return [replace(u, row=i + 1) for i, u in enumerate(units)]


def with_geometry(
    units: list[BoundaryUnit], code: str, geometry: shapely.Geometry | None
) -> list[BoundaryUnit]:
    return [replace(u, geometry=geometry) if u.code == code else u for u in units]


def by_code(units: list[BoundaryUnit], code: str) -> BoundaryUnit:
    return next(u for u in units if u.code == code)


def write_geojson(units: list[BoundaryUnit], path: Path, crs_name: str | None = None) -> Path:
    collection: dict = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"code": u.code, "name": u.name, "level": u.level, "parent": u.parent or ""},
                "geometry": mapping(u.geometry) if u.geometry is not None else None,
            }
            for u in units
        ],
    }
    if crs_name:
        collection["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    return path
