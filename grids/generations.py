"""Grid set generations in the database: store an import, activate it, list, diff, read back.

Every import is a new generation; old ones stay (incidents keep the generation they were routed under, and
`locate` can ask a past one). Activation is one transaction that clears the old flag and sets the new one,
so the database never has zero or two active sets; the caller swaps its in-memory tree only after that
transaction committed (see ``dispatch.bootstrap.activate_generation``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import shapely
from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from dispatch import models as m
from dispatch.db import Database
from grids.directory import DEFAULT_NEAR_BOUNDARY_M, JurisdictionTree
from grids.validate import BoundaryUnit, ValidationReport, area_m2

UnitRow = tuple[str, str, str, str | None, bytes]
Progress = Callable[[int, int], None]
_CHUNK = 5000  # rows per INSERT: big enough for Core's executemany, small enough for progress


@dataclass(frozen=True)
class GenerationInfo:
    id: int
    county: str
    created_at: datetime
    active: bool
    note: str
    units: int
    grids: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "county": self.county,
            "created_at": self.created_at.isoformat(),
            "active": self.active,
            "note": self.note,
            "units": self.units,
            "grids": self.grids,
        }


def _report_key(generation: int) -> str:
    return f"grid_generation:{generation}:report"


def store_generation(
    db: Database,
    units: Sequence[BoundaryUnit],
    report: ValidationReport,
    *,
    note: str,
    now: datetime,
    progress: Progress | None = None,
) -> int:
    """A new, inactive generation holding ``units`` (which must have validated without errors)."""
    if not report.ok:
        raise ValueError("a set with validation errors is never stored")
    counties = sorted({u.code for u in units if u.level == "county"})
    geometries = shapely.to_wkb([u.geometry for u in units])
    with db.write() as s:
        generation = m.GridGeneration(county=",".join(counties), created_at=now, active=False, note=note)
        s.add(generation)
        s.flush()
        gen_id = int(generation.id or 0)
        rows = [
            {
                "generation": gen_id,
                "code": u.code,
                "name": u.name,
                "level": u.level,
                "parent": u.parent,
                "geometry": wkb,
            }
            for u, wkb in zip(units, geometries, strict=True)
        ]
        for start in range(0, len(rows), _CHUNK):
            s.execute(insert(m.Unit), rows[start : start + _CHUNK])
            if progress is not None:
                progress(min(start + _CHUNK, len(rows)), len(rows))
        s.add(m.Meta(key=_report_key(gen_id), value=json.dumps(report.as_dict(), ensure_ascii=False)))
    return gen_id


def set_active(s: Session, generation: int) -> None:
    """Move the active flag inside the caller's transaction (which may add the grids.activated event)."""
    if s.get(m.GridGeneration, generation) is None:
        raise LookupError(f"no grid generation {generation}")
    s.execute(update(m.GridGeneration).where(m.GridGeneration.active).values(active=False))
    s.execute(update(m.GridGeneration).where(m.GridGeneration.id == generation).values(active=True))


def mark_active(db: Database, generation: int) -> None:
    with db.write() as s:
        set_active(s, generation)


def active_generation(db: Database) -> int | None:
    with db.read() as s:
        return s.execute(
            select(m.GridGeneration.id).where(m.GridGeneration.active).order_by(m.GridGeneration.id.desc())
        ).scalar()


def list_generations(db: Database) -> list[GenerationInfo]:
    with db.read() as s:
        counts = {
            (gen, level): n
            for gen, level, n in s.execute(
                select(m.Unit.generation, m.Unit.level, func.count()).group_by(
                    m.Unit.generation, m.Unit.level
                )
            )
        }
        gens = s.execute(select(m.GridGeneration).order_by(m.GridGeneration.id)).scalars().all()
    out = []
    for g in gens:
        gid = int(g.id or 0)
        total = sum(n for (gen, _), n in counts.items() if gen == gid)
        out.append(
            GenerationInfo(gid, g.county, g.created_at, g.active, g.note, total, counts.get((gid, "grid"), 0))
        )
    return out


def generation_report(db: Database, generation: int) -> dict[str, Any] | None:
    with db.read() as s:
        row = s.get(m.Meta, _report_key(generation))
    return json.loads(row.value) if row else None


def unit_rows(
    db: Database,
    generation: int,
    *,
    level: str | None = None,
    parent: str | None = None,
    under: str | None = None,
) -> list[UnitRow]:
    """Units of a generation; ``under`` keeps a unit and everything below it (codes nest by prefix)."""
    query = select(m.Unit.code, m.Unit.name, m.Unit.level, m.Unit.parent, m.Unit.geometry).where(
        m.Unit.generation == generation
    )
    if level is not None:
        query = query.where(m.Unit.level == level)
    if parent is not None:
        query = query.where(m.Unit.parent == parent)
    if under is not None:
        query = query.where(m.Unit.code.startswith(under, autoescape=True))
    with db.read() as s:
        return [tuple(r) for r in s.execute(query.order_by(m.Unit.code)).all()]  # type: ignore[misc]


def exists(db: Database, generation: int) -> bool:
    with db.read() as s:
        return s.get(m.GridGeneration, generation) is not None


def load_tree(
    db: Database, generation: int, near_boundary_m: float = DEFAULT_NEAR_BOUNDARY_M
) -> JurisdictionTree:
    return JurisdictionTree.from_rows(generation, unit_rows(db, generation), near_boundary_m)


def diff_generations(db: Database, old: int, new: int, tolerance_m2: float = 1.0) -> dict[str, Any]:
    """Units added, removed, reshaped (area changed beyond the tolerance) or renamed between two generations."""
    before = {r[0]: r for r in unit_rows(db, old)}
    after = {r[0]: r for r in unit_rows(db, new)}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    reshaped: list[dict[str, Any]] = []
    renamed: list[dict[str, str]] = []
    for code in sorted(before.keys() & after.keys()):
        a, b = before[code], after[code]
        if a[1] != b[1]:
            renamed.append({"code": code, "from": a[1], "to": b[1]})
        if a[4] == b[4]:
            continue
        ga, gb = shapely.from_wkb(a[4]), shapely.from_wkb(b[4])
        changed = area_m2(shapely.symmetric_difference(ga, gb))
        if changed > tolerance_m2:
            reshaped.append(
                {
                    "code": code,
                    "level": b[2],
                    "changed_m2": round(changed, 1),
                    "area_m2": round(area_m2(gb), 1),
                }
            )
    return {
        "from": old,
        "to": new,
        "added": [{"code": c, "level": after[c][2], "name": after[c][1]} for c in added],
        "removed": [{"code": c, "level": before[c][2], "name": before[c][1]} for c in removed],
        "reshaped": reshaped,
        "renamed": renamed,
        "unchanged": len(before.keys() & after.keys()) - len(reshaped),
    }
