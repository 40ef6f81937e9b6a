"""The active jurisdiction tree of a grid generation: names, levels, parents, and the grid index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from grids.index import GridIndex, Nearest

# A phone's GPS fix near a grid's outer edge (a river bank, the county line) often lands a few dozen metres
# outside every grid; sending those to the county's triage desk would swamp it with cases that obviously
# belong to the grid next door. Farther than this, nobody should guess.
DEFAULT_NEAR_BOUNDARY_M = 200.0


@dataclass(frozen=True)
class Routing:
    """Where a reported point goes: a grid (possibly snapped from just outside), or triage (grid None)."""

    grid_code: str | None
    near_boundary: bool  # outside every grid, snapped to the nearest one within the allowed distance
    distance_m: float  # 0 inside a grid; otherwise ground distance to the nearest grid (inf when none)


@dataclass(frozen=True)
class UnitInfo:
    code: str
    name: str
    level: str
    parent: str | None
    geometry: BaseGeometry


class JurisdictionTree:
    def __init__(
        self, generation: int, units: list[UnitInfo], near_boundary_m: float = DEFAULT_NEAR_BOUNDARY_M
    ) -> None:
        self.generation = generation
        self.near_boundary_m = near_boundary_m
        self.units = {u.code: u for u in units}
        grids = [u for u in units if u.level == "grid"]
        self.index = GridIndex([g.code for g in grids], [g.geometry for g in grids])
        self.counties = sorted(u.code for u in units if u.level == "county")

    @classmethod
    def from_rows(
        cls,
        generation: int,
        rows: list[tuple[str, str, str, str | None, bytes]],
        near_boundary_m: float = DEFAULT_NEAR_BOUNDARY_M,
    ) -> JurisdictionTree:
        geometries = shapely.from_wkb([row[4] for row in rows])  # one vectorised parse for the whole set
        units = [UnitInfo(c, n, lv, p, g) for (c, n, lv, p, _), g in zip(rows, geometries, strict=True)]
        return cls(generation, units, near_boundary_m)

    def route(self, lon: float, lat: float) -> Routing:
        """The routing rule: inside → that grid (edge rule: smallest code); just outside → nearest grid,
        flagged; farther → triage."""
        code = self.index.locate(lon, lat)
        if code is not None:
            return Routing(code, False, 0.0)
        near = self.index.nearest(lon, lat, within_m=self.near_boundary_m)
        if near is not None:
            return Routing(near.code, True, near.distance_m)
        farther = self.index.nearest(lon, lat)
        return Routing(None, False, farther.distance_m if farther else float("inf"))

    def locate(self, lon: float, lat: float) -> str | None:
        return self.index.locate(lon, lat)

    def nearest(self, lon: float, lat: float) -> Nearest | None:
        return self.index.nearest(lon, lat)

    def path(self, grid_code: str) -> list[dict[str, Any]]:
        """County → grid, each with code, name and level."""
        chain: list[dict[str, Any]] = []
        code: str | None = grid_code
        while code is not None and code in self.units:
            u = self.units[code]
            chain.append({"code": u.code, "name": u.name, "level": u.level})
            code = u.parent
        return list(reversed(chain))

    def name(self, code: str) -> str | None:
        u = self.units.get(code)
        return u.name if u else None

    def is_grid(self, code: str) -> bool:
        u = self.units.get(code)
        return u is not None and u.level == "grid"
