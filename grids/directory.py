"""The active jurisdiction tree of a grid generation: names, levels, parents, and the grid index."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import shapely
from shapely.geometry.base import BaseGeometry

from grids.index import GridIndex, Nearest


@dataclass(frozen=True)
class UnitInfo:
    code: str
    name: str
    level: str
    parent: str | None
    geometry: BaseGeometry


class JurisdictionTree:
    def __init__(self, generation: int, units: list[UnitInfo]) -> None:
        self.generation = generation
        self.units = {u.code: u for u in units}
        grids = [u for u in units if u.level == "grid"]
        self.index = GridIndex([g.code for g in grids], [g.geometry for g in grids])
        self.counties = sorted(u.code for u in units if u.level == "county")

    @classmethod
    def from_rows(
        cls, generation: int, rows: list[tuple[str, str, str, str | None, bytes]]
    ) -> JurisdictionTree:
        return cls(generation, [UnitInfo(c, n, lv, p, shapely.from_wkb(g)) for c, n, lv, p, g in rows])

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
