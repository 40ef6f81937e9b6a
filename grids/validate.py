"""Validation of an imported boundary set before it may route anything. Pure: shapely in, a report out.

A wrong grid sends a case to the wrong worker, so every class of defect a county GIS officer's export can
carry is looked for and reported with where it is and how big it is:

| check | severity | what |
|---|---|---|
| `malformed_code` | error | code not digits, wrong length for its level, or not its parent's code + 3 digits |
| `bad_level` | error | level not one of county / township / community / grid |
| `duplicate_code` | error | two features with one code |
| `empty_geometry` / `not_polygon` | error | nothing to route against |
| `invalid_geometry` | error | self-intersection, bad ring…: where, why, and the shape `make_valid` would give |
| `wrong_crs` | error | coordinates that are not longitude/latitude (a projected file without its CRS) |
| `missing_parent` / `missing_level` | error | a parent that is not in the file, a skipped level, a unit without children |
| `overlap` | error | two units of one level sharing area above the tolerance (area and location) |
| `gap` | error | part of a parent not covered by its children above the tolerance (area and location) |
| `outside_parent` | error | part of a child outside its parent above the tolerance |
| `edge_mismatch` | warning | edges of neighbours do not match vertex for vertex, all differences below the tolerance |
| `outside_china` / `missing_name` / `sliver` | warning | probably a mistake, but routing still works |

Errors refuse activation; warnings do not. Areas are in m² on the local equirectangular plane (accurate to
well under 1 % at county size), which is what a tolerance in "square metres" means to a GIS officer.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.geometry import mapping
from shapely.geometry.base import BaseGeometry

LEVELS = ("county", "township", "community", "grid")
CODE_LENGTH = {"county": 6, "township": 9, "community": 12, "grid": 15}
PARENT_LEVEL = {"township": "county", "community": "township", "grid": "community"}
METRES_PER_DEGREE = 111_320.0
DEFAULT_TOLERANCE_M2 = 1.0
SLIVER_M2 = 100.0  # a "grid" smaller than a tennis court is almost always a digitising leftover
_CHINA = (72.0, 0.8, 137.9, 55.9)
_WHERE = re.compile(r"\[([-\d.eE+]+) ([-\d.eE+]+)\]")


@dataclass(frozen=True)
class BoundaryUnit:
    """One feature of a boundary file, as read (geometry None when the feature had none)."""

    code: str
    name: str
    level: str
    parent: str | None
    geometry: BaseGeometry | None
    row: int = 0  # feature number in the file, for messages


@dataclass(frozen=True)
class Issue:
    check: str
    severity: str  # "error" | "warning"
    message: str
    codes: tuple[str, ...] = ()
    location: tuple[float, float] | None = None  # lon, lat
    area_m2: float | None = None
    repaired: dict[str, Any] | None = None  # GeoJSON of what make_valid would give

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["codes"] = list(self.codes)
        out["location"] = list(self.location) if self.location else None
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class ValidationReport:
    units: dict[str, int]
    tolerance_m2: float
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def checks(self) -> set[str]:
        return {i.check for i in self.issues}

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "units": self.units,
            "tolerance_m2": self.tolerance_m2,
            "issues": [i.as_dict() for i in self.issues],
        }


def area_m2(geometry: BaseGeometry) -> float:
    if geometry.is_empty:
        return 0.0
    lat = geometry.centroid.y
    return float(geometry.area) * METRES_PER_DEGREE**2 * math.cos(math.radians(lat))


def _spot(geometry: BaseGeometry) -> tuple[float, float] | None:
    if geometry is None or geometry.is_empty:
        return None
    p = geometry.representative_point() if shapely.get_dimensions(geometry) == 2 else geometry.centroid
    return (round(p.x, 7), round(p.y, 7))


def _polygonal(geometry: BaseGeometry) -> BaseGeometry:
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


# ------------------------------------------------------------------ per feature


def _check_codes(units: list[BoundaryUnit], issues: list[Issue]) -> None:
    rows_by_code: dict[str, list[int]] = defaultdict(list)
    for u in units:
        rows_by_code[u.code].append(u.row)
        if u.level not in LEVELS:
            issues.append(
                Issue(
                    "bad_level", "error", f"feature {u.row} ({u.code}): unknown level {u.level!r}", (u.code,)
                )
            )
            continue
        want = CODE_LENGTH[u.level]
        if not (u.code.isdigit() and u.code.isascii() and len(u.code) == want):
            issues.append(
                Issue(
                    "malformed_code",
                    "error",
                    f"feature {u.row}: {u.level} code {u.code!r} must be {want} digits",
                    (u.code,),
                )
            )
        elif u.parent and not u.code.startswith(u.parent):
            issues.append(
                Issue(
                    "malformed_code",
                    "error",
                    f"{u.code} does not start with its parent's code {u.parent} (SPEC: parent + 3 digits)",
                    (u.code, u.parent),
                )
            )
        if not u.name.strip():
            issues.append(Issue("missing_name", "warning", f"{u.code} has no name", (u.code,)))
    for code, rows in sorted(rows_by_code.items()):
        if len(rows) > 1:
            issues.append(
                Issue(
                    "duplicate_code",
                    "error",
                    f"code {code} appears {len(rows)} times (features {rows})",
                    (code,),
                )
            )


def _check_geometry(u: BoundaryUnit, issues: list[Issue]) -> BaseGeometry | None:
    """The geometry later checks may use (repaired if invalid), or None when there is nothing usable."""
    g = u.geometry
    if g is None or g.is_empty:
        issues.append(Issue("empty_geometry", "error", f"{u.code} has an empty geometry", (u.code,)))
        return None
    if g.geom_type not in ("Polygon", "MultiPolygon"):
        issues.append(
            Issue("not_polygon", "error", f"{u.code} is a {g.geom_type}, not a polygon", (u.code,), _spot(g))
        )
        return None
    minx, miny, maxx, maxy = g.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        issues.append(
            Issue(
                "wrong_crs",
                "error",
                f"{u.code} has coordinates like ({minx:.6g}, {miny:.6g}) that are not longitude/latitude: "
                "declare the file's CRS (e.g. --crs EPSG:4547) or export it as WGS-84",
                (u.code,),
            )
        )
        return None
    if not g.is_valid:
        reason = shapely.is_valid_reason(g)
        found = _WHERE.search(reason)
        where = (float(found.group(1)), float(found.group(2))) if found else _spot(g)
        repaired = _polygonal(shapely.make_valid(g))
        issues.append(
            Issue(
                "invalid_geometry",
                "error",
                f"{u.code}: {reason}; make_valid would give a {repaired.geom_type} of {area_m2(repaired):.0f} m²",
                (u.code,),
                where,
                area_m2(repaired),
                mapping(repaired) if not repaired.is_empty else None,
            )
        )
        g = repaired
        if g.is_empty:
            return None
    if not (_CHINA[0] <= minx and maxx <= _CHINA[2] and _CHINA[1] <= miny and maxy <= _CHINA[3]):
        issues.append(Issue("outside_china", "warning", f"{u.code} lies outside China", (u.code,), _spot(g)))
    if u.level == "grid" and area_m2(g) < SLIVER_M2:
        issues.append(
            Issue(
                "sliver",
                "warning",
                f"grid {u.code} is only {area_m2(g):.1f} m²",
                (u.code,),
                _spot(g),
                area_m2(g),
            )
        )
    return g


# ------------------------------------------------------------------ hierarchy


def _check_hierarchy(units: list[BoundaryUnit], issues: list[Issue]) -> None:
    by_code = {u.code: u for u in units}
    has_children: set[str] = set()
    for u in units:
        if u.level not in LEVELS:
            continue
        if not u.parent:
            if u.level != "county":
                issues.append(
                    Issue(
                        "missing_level",
                        "error",
                        f"{u.level} {u.code} has no parent: only a county may be the top unit",
                        (u.code,),
                    )
                )
            continue
        parent = by_code.get(u.parent)
        if parent is None:
            issues.append(
                Issue(
                    "missing_parent", "error", f"{u.code}'s parent {u.parent} is not in the file", (u.code,)
                )
            )
            continue
        has_children.add(parent.code)
        if parent.level != PARENT_LEVEL.get(u.level):
            issues.append(
                Issue(
                    "missing_level",
                    "error",
                    f"{u.level} {u.code} has a {parent.level} as parent ({parent.code}); "
                    f"expected a {PARENT_LEVEL.get(u.level, 'no parent')}",
                    (u.code, parent.code),
                )
            )
    for u in units:
        if u.level in LEVELS and u.level != "grid" and u.code not in has_children:
            issues.append(
                Issue(
                    "missing_level",
                    "error",
                    f"{u.level} {u.code} has no {LEVELS[LEVELS.index(u.level) + 1]}s: reports there would land nowhere",
                    (u.code,),
                )
            )
    if units and not any(u.level == "grid" for u in units):
        issues.append(Issue("missing_level", "error", "the file has no grid level"))


# ------------------------------------------------------------------ geometry between units


def _check_overlaps(level: str, codes: list[str], geoms: np.ndarray, tol: float, issues: list[Issue]) -> None:
    if len(geoms) < 2:
        return
    # A valid coverage has no overlaps by definition; only look closer at units whose edges do not match.
    if shapely.coverage_is_valid(geoms):
        return
    suspect = np.flatnonzero(~shapely.is_empty(shapely.coverage_invalid_edges(geoms)))
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms[suspect], predicate="intersects")
    left = suspect[left]
    keep = left < right
    left, right = left[keep], right[keep]
    pieces = shapely.intersection(geoms[left], geoms[right])
    small = 0
    for i, j, piece in zip(left, right, pieces, strict=True):
        area = area_m2(piece)
        if area > tol:
            issues.append(
                Issue(
                    "overlap",
                    "error",
                    f"{level} units {codes[i]} and {codes[j]} overlap by {area:.1f} m²",
                    (codes[i], codes[j]),
                    _spot(_polygonal(piece)),
                    area,
                )
            )
        else:
            small += 1
    if small or len(suspect):
        issues.append(
            Issue(
                "edge_mismatch",
                "warning",
                f"{len(suspect)} units at {level} level have edges that do not match their neighbours vertex "
                f"for vertex; every overlap among the {small} touching pairs checked is under {tol} m²",
                tuple(codes[i] for i in suspect[:20]),
            )
        )


def _check_parent_cover(
    parent: BoundaryUnit | None,
    parent_geom: BaseGeometry | None,
    kids: list[tuple[str, BaseGeometry]],
    tol: float,
    issues: list[Issue],
) -> None:
    """Children inside their parent, and no gap between them inside it."""
    if parent is None or parent_geom is None or not kids:
        return
    shapely.prepare(parent_geom)
    geoms = np.array([g for _, g in kids], dtype=object)
    covered = shapely.covers(parent_geom, geoms)
    for (code, g), inside in zip(kids, covered, strict=True):
        if inside:
            continue
        outside = g.difference(parent_geom)
        area = area_m2(outside)
        if area > tol:
            issues.append(
                Issue(
                    "outside_parent",
                    "error",
                    f"{code} extends {area:.1f} m² outside its parent {parent.code}",
                    (code, parent.code),
                    _spot(outside),
                    area,
                )
            )
    # Cheap test first: equal area means nothing is missing (overlaps are reported on their own).
    missing = area_m2(parent_geom) - sum(area_m2(g) for g in geoms)
    if abs(missing) <= tol and all(covered):
        return
    union = shapely.union_all(geoms)
    for hole in shapely.get_parts(parent_geom.difference(union)):
        if hole.geom_type != "Polygon":
            continue
        area = area_m2(hole)
        if area > tol:
            issues.append(
                Issue(
                    "gap",
                    "error",
                    f"{area:.1f} m² of {parent.code} is covered by none of its children",
                    (parent.code,),
                    _spot(hole),
                    area,
                )
            )


def validate_units(
    units: Iterable[BoundaryUnit], tolerance_m2: float = DEFAULT_TOLERANCE_M2
) -> ValidationReport:
    units = list(units)
    counts = {level: sum(u.level == level for u in units) for level in LEVELS}
    report = ValidationReport(counts, tolerance_m2)
    issues = report.issues
    _check_codes(units, issues)
    usable: dict[str, BaseGeometry] = {}
    duplicated = {i.codes[0] for i in issues if i.check == "duplicate_code"}
    for u in units:
        g = _check_geometry(u, issues)
        if g is not None and u.code not in duplicated:
            usable[u.code] = g
    _check_hierarchy(units, issues)
    by_code = {u.code: u for u in units if u.code not in duplicated}
    for level in LEVELS:
        members = [u.code for u in units if u.level == level and u.code in usable]
        _check_overlaps(
            level, members, np.array([usable[c] for c in members], dtype=object), tolerance_m2, issues
        )
    children: dict[str, list[tuple[str, BaseGeometry]]] = defaultdict(list)
    for u in units:
        if u.parent and u.code in usable:
            children[u.parent].append((u.code, usable[u.code]))
    for parent_code, kids in sorted(children.items()):
        _check_parent_cover(by_code.get(parent_code), usable.get(parent_code), kids, tolerance_m2, issues)
    return report
