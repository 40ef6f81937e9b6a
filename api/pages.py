"""The pages served by the app itself (command-centre screen, supervisor console, field report page).

Everything a page needs — HTML, scripts, styles, the map library, icons — is served from `api/static`, so the
pages work on an intranet without internet access. Grid polygons come from our own GeoJSON; a base map is
drawn only when an intranet tile server is configured (`GRIDDISPATCH_TILE_URL`).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import shapely
from fastapi import APIRouter, Query
from shapely.geometry import mapping
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from api.deps import ContainerDep, CurrentActor
from api.errors import JSON
from dispatch import models as m
from dispatch.domain import Refusal
from grids.directory import JurisdictionTree

STATIC = Path(__file__).resolve().parent / "static"
router = APIRouter()
METRES_PER_DEGREE = 111_320.0  # good enough to turn a simplification tolerance into degrees
# HTML is re-read on every deploy; scripts and styles may be cached briefly (they are small).
NO_CACHE = {"Cache-Control": "no-cache"}


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=NO_CACHE)


@router.get("/", include_in_schema=False)
async def screen() -> FileResponse:
    return _page("screen.html")


@router.get("/supervisor", include_in_schema=False)
async def supervisor() -> FileResponse:
    return _page("supervisor.html")


@router.get("/report", include_in_schema=False)
async def report() -> FileResponse:
    return _page("report.html")


@router.get("/static/{path:path}", include_in_schema=False)
async def static(path: str) -> FileResponse:
    target = (STATIC / path).resolve()
    if not target.is_file() or not target.is_relative_to(STATIC):
        raise Refusal(404, "not_found", f"no file {path}")
    return FileResponse(target, headers={"Cache-Control": "no-cache"})


# ---------------------------------------------------------------- small JSON helpers for the pages


@router.get("/api/v1/pages/me", tags=["pages"])
async def me(container: ContainerDep, actor: CurrentActor) -> dict[str, Any]:
    """Who is signed in, and where: the pages choose their scope and actions from this."""

    def load() -> m.User | None:
        with container.db.read() as s:
            return s.get(m.User, actor.username)

    user = await run_in_threadpool(load)
    unit = actor.unit_code
    return {
        "username": actor.username,
        "display_name": user.display_name if user else actor.username,
        "role": actor.role,
        "unit": {"code": unit, "name": container.tree.name(unit) if unit else None},
        "department": actor.department,
        "county": unit[:6] if unit else (container.tree.counties[0] if container.tree.counties else None),
    }


@router.get("/api/v1/pages/config", tags=["pages"])
async def config(container: ContainerDep, _actor: CurrentActor) -> dict[str, Any]:
    """Reference data and limits the pages show: categories, departments, units, photo limits, tiles."""

    def load() -> list[tuple[str, str]]:
        with container.db.read() as s:
            return [
                (d.code, d.name)
                for d in s.execute(select(m.Department).order_by(m.Department.code)).scalars()
            ]

    settings = container.settings
    tree = container.tree
    return {
        "categories": container.categories,
        "departments": dict(await run_in_threadpool(load)),
        "units": [
            {"code": u.code, "name": u.name, "level": u.level, "parent": u.parent}
            for u in sorted(tree.units.values(), key=lambda u: u.code)
        ],
        "photo": {
            "max_bytes": settings.photo_max_bytes,
            "max_count": settings.photo_max_count,
            "types": ["image/jpeg", "image/png", "image/webp"],
        },
        "tiles": {"url": settings.tile_url, "attribution": settings.tile_attribution},
        "clock_speed": settings.clock_speed,
    }


@router.get("/api/v1/pages/grids.geojson", tags=["pages"])
async def grids_geojson(
    container: ContainerDep,
    _actor: CurrentActor,
    level: Literal["county", "township", "community", "grid"] = "grid",
    simplify: Annotated[float, Query(ge=0, le=500, description="tolerance in metres")] = 5.0,
) -> JSON:
    """Unit polygons of the active generation as GeoJSON (WGS-84), simplified for drawing."""
    tree = container.tree
    return JSON(await run_in_threadpool(_geojson, tree, tree.generation, level, simplify))


@lru_cache(maxsize=16)
def _geojson(tree: JurisdictionTree, generation: int, level: str, simplify: float) -> dict[str, Any]:
    """Cached per tree and generation: the active tree is read-only, a new generation is a new tree."""
    tolerance = simplify / METRES_PER_DEGREE
    features = []
    for u in sorted(tree.units.values(), key=lambda u: u.code):
        if u.level != level:
            continue
        geometry = (
            shapely.simplify(u.geometry, tolerance, preserve_topology=True) if tolerance else u.geometry
        )
        features.append(
            {
                "type": "Feature",
                "properties": {"code": u.code, "name": u.name, "level": u.level, "parent": u.parent or ""},
                "geometry": mapping(shapely.set_precision(geometry, 1e-6)),
            }
        )
    return {"type": "FeatureCollection", "generation": generation, "features": features}
