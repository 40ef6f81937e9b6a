"""The pages served by the app itself (command-centre screen, supervisor console, field report page).

Everything a page needs — HTML, scripts, styles, the map library, icons — is served from `api/static`, so the
pages work on an intranet without internet access. Grid polygons come from our own GeoJSON (`GET /api/v1/grids`);
a base map is drawn only when an intranet tile server is configured (`GRIDDISPATCH_TILE_URL`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from api.deps import ContainerDep, CurrentActor
from dispatch import models as m
from dispatch.domain import Refusal

STATIC = Path(__file__).resolve().parent / "static"
router = APIRouter()
# Pages and their files are revalidated on every load (ETag / Last-Modified): a deploy shows at once.
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
    return FileResponse(target, headers=NO_CACHE)


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
