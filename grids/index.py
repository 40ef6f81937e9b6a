"""Locate a lon/lat in a grid set. Built once from the grid polygons, then read-only (safe across threads).

Edge rule: a point on an edge or vertex shared by several grids belongs to the one with the smallest code, so
the answer never depends on index order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
import shapely.ops
from shapely.geometry.base import BaseGeometry

METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class Nearest:
    code: str
    distance_m: float


class GridIndex:
    def __init__(self, codes: list[str], geometries: list[BaseGeometry]) -> None:
        if len(codes) != len(geometries):
            raise ValueError("one geometry per grid code")
        self.codes = np.array(codes, dtype=object)
        self.geometries = np.array(geometries, dtype=object)
        for g in self.geometries:
            shapely.prepare(g)
        self.tree = shapely.STRtree(self.geometries)

    def __len__(self) -> int:
        return len(self.codes)

    def locate(self, lon: float, lat: float) -> str | None:
        hits = self.tree.query(shapely.Point(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        return str(min(self.codes[hits]))

    def nearest(self, lon: float, lat: float) -> Nearest | None:
        """Nearest grid and an approximate distance in metres (equirectangular scale at the point)."""
        if len(self) == 0:
            return None
        point = shapely.Point(lon, lat)
        idx = int(self.tree.nearest(point))
        geom = self.geometries[idx]
        near = shapely.ops.nearest_points(geom, point)[0]
        dx = (near.x - lon) * METRES_PER_DEGREE * math.cos(math.radians(lat))
        dy = (near.y - lat) * METRES_PER_DEGREE
        return Nearest(str(self.codes[idx]), math.hypot(dx, dy))
