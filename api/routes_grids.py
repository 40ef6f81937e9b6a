"""Grid routes (SPEC §4): GeoJSON of the units, locate (also against a past generation), boundary import
(admin, with a dry run), generations and their diff. Thin: parse, authorize, call grids/, shape the answer."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Any

import orjson
import shapely
from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from api.deps import ContainerDep, CurrentActor
from api.errors import JSON
from dispatch.bootstrap import Container, activate_generation
from dispatch.clock import utc
from dispatch.domain import Actor, Refusal
from grids import generations
from grids.directory import JurisdictionTree
from grids.importer import BoundaryFileError, read_boundary_bytes
from grids.validate import DEFAULT_TOLERANCE_M2, validate_units

MAX_ID = 2**31 - 1  # database integer ids: a bigger number is a 422, not an overflow
GenerationId = Annotated[int, Path(ge=1, le=MAX_ID)]

router = APIRouter(prefix="/api/v1", tags=["grids"])

CODE = r"^\d{6}(\d{3}){0,3}$"
_PAST_TREES = 2  # a province tree holds ~200 MB; keep only a couple of past generations built


class _PastTrees:
    """Trees of inactive generations, built on first ask and kept for the next (generations never change)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.trees: OrderedDict[tuple[int, int], JurisdictionTree] = OrderedDict()

    def get(self, container: Container, generation: int) -> JurisdictionTree:
        active = container.tree
        if generation == active.generation:
            return active
        key = (id(container), generation)
        with self.lock:
            if key in self.trees:
                self.trees.move_to_end(key)
                return self.trees[key]
        if not generations.exists(container.db, generation):
            raise Refusal(404, "unknown_generation", f"no grid generation {generation}")
        tree = generations.load_tree(container.db, generation, container.settings.near_boundary_m)
        with self.lock:
            self.trees[key] = tree
            while len(self.trees) > _PAST_TREES:
                self.trees.popitem(last=False)
        return tree


_past = _PastTrees()


def _require_admin(actor: Actor) -> None:
    if actor.role != "admin":
        raise Refusal(403, "forbidden", "only an admin may import or activate grid boundaries")


def _admin_first(actor: CurrentActor) -> None:
    """As a dependency it runs before the upload is parsed: a non-admin hears 403, not a form error."""
    _require_admin(actor)


@router.get("/grids/locate")
async def locate(
    container: ContainerDep,
    _actor: CurrentActor,
    lon: Annotated[float, Query(ge=-180, le=180, allow_inf_nan=False)],
    lat: Annotated[float, Query(ge=-90, le=90, allow_inf_nan=False)],
    generation: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="a past generation; default the active one")
    ] = None,
) -> JSON:
    tree = container.tree if generation is None else await run_in_threadpool(_past.get, container, generation)
    code = tree.locate(lon, lat)
    if code is None:
        near = tree.nearest(lon, lat)
        detail = {
            "message": "the point is outside every grid",
            "generation": tree.generation,
            "nearest": {
                "code": near.code,
                "name": tree.name(near.code),
                "distance_m": round(near.distance_m, 1),
            }
            if near
            else None,
        }
        return JSON({"detail": detail, "code": "outside_grids"}, status_code=404)
    return JSON(
        {
            "grid": {"code": code, "name": tree.name(code)},
            "generation": tree.generation,
            "path": tree.path(code),
        }
    )


def _feature_collection(rows: list[generations.UnitRow], simplify_m: float, generation: int) -> bytes:
    geoms = shapely.from_wkb([r[4] for r in rows])
    if simplify_m > 0 and len(geoms):
        # coverage_simplify moves a shared edge once for both neighbours, so the map shows no slivers.
        geoms = shapely.coverage_simplify(geoms, simplify_m / 111_320.0)
        geoms = shapely.set_precision(geoms, 1e-7)  # ~1 cm: shorter numbers, same picture
    texts = shapely.to_geojson(geoms)
    parts = [
        b'{"type":"Feature","id":'
        + orjson.dumps(code)
        + b',"properties":'
        + orjson.dumps({"code": code, "name": name, "level": level, "parent": parent or ""})
        + b',"geometry":'
        + text.encode()
        + b"}"
        for (code, name, level, parent, _), text in zip(rows, texts, strict=True)
    ]
    head = b'{"type":"FeatureCollection","generation":' + orjson.dumps(generation) + b',"features":['
    return head + b",".join(parts) + b"]}"


@router.get("/grids", responses={200: {"content": {"application/geo+json": {"schema": {"type": "object"}}}}})
async def grids_geojson(
    container: ContainerDep,
    actor: CurrentActor,
    level: Annotated[str | None, Query(pattern="^(county|township|community|grid)$")] = None,
    parent: Annotated[str | None, Query(pattern=CODE)] = None,
    under: Annotated[str | None, Query(pattern=CODE, description="this unit and all below it")] = None,
    generation: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    simplify: Annotated[float, Query(ge=0, le=5000, description="display tolerance in metres")] = 0.0,
) -> Response:
    gen = generation or container.tree.generation
    if generation is not None and not generations.exists(container.db, generation):
        raise Refusal(404, "unknown_generation", f"no grid generation {generation}")

    # A user sees the map of their own county (neighbouring grids included), never another county's.
    home = (actor.unit_code or actor.department or "")[:6]

    def build() -> bytes:
        rows = generations.unit_rows(container.db, gen, level=level, parent=parent, under=under)
        if home:
            rows = [r for r in rows if r[0].startswith(home)]
        return _feature_collection(rows, simplify, gen)

    return Response(await run_in_threadpool(build), media_type="application/geo+json")


@router.get("/grids/generations")
async def list_generations(container: ContainerDep, _actor: CurrentActor) -> JSON:
    rows = await run_in_threadpool(generations.list_generations, container.db)
    return JSON({"active": container.tree.generation, "generations": [g.as_dict() for g in rows]})


@router.get("/grids/generations/{generation}/report")
async def generation_report(generation: GenerationId, container: ContainerDep, _actor: CurrentActor) -> JSON:
    report = await run_in_threadpool(generations.generation_report, container.db, generation)
    if report is None:
        raise Refusal(404, "unknown_generation", f"no validation report for generation {generation}")
    return JSON(report)


@router.get("/grids/diff")
async def diff(
    container: ContainerDep,
    _actor: CurrentActor,
    from_generation: Annotated[int, Query(alias="from", ge=1, le=MAX_ID)],
    to_generation: Annotated[int, Query(alias="to", ge=1, le=MAX_ID)],
) -> JSON:
    for g in (from_generation, to_generation):
        if not generations.exists(container.db, g):
            raise Refusal(404, "unknown_generation", f"no grid generation {g}")
    return JSON(
        await run_in_threadpool(generations.diff_generations, container.db, from_generation, to_generation)
    )


@router.post("/grids/generations/{generation}/activate")
async def activate(generation: GenerationId, container: ContainerDep, actor: CurrentActor) -> JSON:
    """Switch routing to a stored generation (also the way back to an earlier one)."""
    _require_admin(actor)
    if not generations.exists(container.db, generation):
        raise Refusal(404, "unknown_generation", f"no grid generation {generation}")
    tree = await run_in_threadpool(activate_generation, container, generation)
    return JSON({"active": tree.generation, "grids": len(tree.index)})


@router.post("/grids/import", dependencies=[Depends(_admin_first)])
async def import_boundaries(
    container: ContainerDep,
    actor: CurrentActor,
    file: Annotated[UploadFile, File(description="GeoJSON, GeoPackage (.gpkg) or zipped Shapefile (.zip)")],
    dry_run: Annotated[bool, Form()] = False,
    activate: Annotated[bool, Form(description="activate the new generation when it validates")] = True,
    crs: Annotated[str | None, Form(max_length=100, description="override or supply the file's CRS")] = None,
    coord_sys: Annotated[str, Form(pattern="^(wgs84|gcj02|bd09)$")] = "wgs84",
    tolerance_m2: Annotated[float, Form(ge=0, le=1e6)] = DEFAULT_TOLERANCE_M2,
    note: Annotated[str, Form(max_length=500)] = "",
) -> JSON:
    """Validate a boundary file; unless `dry_run`, store it as a new generation and (by default) activate it.

    A set with validation errors is refused with 422 and the report; nothing is stored and the active
    generation keeps routing.
    """
    _require_admin(actor)
    data = await file.read()
    filename = file.filename or "upload.geojson"

    def run() -> dict[str, Any]:
        try:
            units = read_boundary_bytes(data, filename, crs=crs, coord_sys=coord_sys)
        except BoundaryFileError as exc:
            raise Refusal(422, exc.code, exc.detail) from None
        report = validate_units(units, tolerance_m2)
        if dry_run:
            return {"dry_run": True, "report": report.as_dict(), "generation": None, "activated": False}
        if not report.ok:
            raise Refusal(422, "invalid_boundaries", report.as_dict())  # type: ignore[arg-type]
        now = utc(container.clock.now())
        label = note or f"imported from {filename} by {actor.username}"
        gen = generations.store_generation(container.db, units, report, note=label, now=now)
        if activate:
            activate_generation(container, gen)
        return {"dry_run": False, "report": report.as_dict(), "generation": gen, "activated": activate}

    result = await run_in_threadpool(run)
    return JSON(result, status_code=200 if dry_run else 201)
