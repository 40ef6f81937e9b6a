"""Photos over HTTP: reading them out of a multipart report, serving them only to who may see the case, and
the body limit that lets a multipart report be larger than a JSON one."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException
from starlette.responses import FileResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.deps import ContainerDep, CurrentActor
from api.errors import BodyLimit
from api.schemas import ReportIn
from dispatch import models as m
from dispatch.access import can_see
from dispatch.bootstrap import Container
from dispatch.domain import Actor, Refusal
from dispatch.photos import PhotoStore, is_photo_id
from dispatch.service import to_domain

router = APIRouter(prefix="/api/v1", tags=["photos"])
UPLOAD_PATHS = frozenset({"/api/v1/reports"})


def photo_store(container: Container) -> PhotoStore:
    s = container.settings
    return PhotoStore(s.resolved_photo_dir, s.photo_max_bytes, s.photo_max_pixels, s.photo_thumb_px)


async def store_uploaded(form: FormData, container: Container, already: int = 0) -> list[str]:
    """Store every file part of the form (any field name); returns their ids in upload order."""
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    limit = container.settings.photo_max_count
    if already + len(files) > limit:
        raise Refusal(422, "too_many_photos", f"at most {limit} photos per report")
    store = photo_store(container)
    ids: list[str] = []
    for upload in files:
        # Read one byte past the limit: enough to know it is too big without holding a huge part in memory.
        data = await upload.read(store.max_bytes + 1)
        stored = await run_in_threadpool(store.put, data, upload.filename or "photo")
        ids.append(stored.id)
    return ids


def _visible_case_has_photo(container: Container, actor: Actor, incident_id: str, photo_id: str) -> bool:
    with container.db.read() as s:
        row = s.get(m.Incident, incident_id)
        if row is None or photo_id not in (row.photos or []):
            return False
        return can_see(actor, to_domain(row))


@router.get("/incidents/{incident_id}/photos/{photo_id}")
async def photo(
    incident_id: str,
    photo_id: str,
    container: ContainerDep,
    actor: CurrentActor,
    size: Annotated[Literal["original", "thumb"], Query()] = "original",
) -> FileResponse:
    """A photo of a case. 404 — never 403 — for a case the user may not see, so ids reveal nothing."""
    missing = Refusal(404, "not_found", f"no photo {photo_id} on a case you can see")
    if not is_photo_id(photo_id):
        raise missing
    if not await run_in_threadpool(_visible_case_has_photo, container, actor, incident_id, photo_id):
        raise missing
    found = photo_store(container).open(photo_id, thumb=size == "thumb")
    if found is None:
        raise missing
    path, media_type = found
    return FileResponse(
        path,
        media_type=media_type,
        # Content-addressed: the bytes behind an id never change. Private: it is behind a login.
        headers={
            "Cache-Control": "private, max-age=31536000, immutable",
            "X-Content-Type-Options": "nosniff",
        },
    )


class UploadBodyLimit:
    """The app-wide body limit, except multipart reports (photos), which get the larger upload limit."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int) -> None:
        self.plain = BodyLimit(app, limit)
        self.upload = BodyLimit(app, upload_limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") in UPLOAD_PATHS and _is_multipart(scope):
            await self.upload(scope, receive, send)
        else:
            await self.plain(scope, receive, send)


def _is_multipart(scope: Scope) -> bool:
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            return value.lower().startswith(b"multipart/form-data")
    return False


# ---------------------------------------------------------------- the body of POST /reports


async def read_report(request: Request, container: Container) -> tuple[ReportIn, list[str]]:
    """A report from a JSON body, or from multipart/form-data with photo files.

    JSON is validated exactly as a declared FastAPI body would be (same model, same 422s). In multipart, the
    report is either one part named `report` holding that same JSON, or flat fields (`lon`, `lat`,
    `category`, …, `reporter_name`, `reporter_phone`); every file part is a photo.
    """
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("multipart/form-data"):
        limit = container.settings.photo_max_count
        try:
            form = await request.form(max_files=limit + 1, max_fields=40)
        except MultiPartException as exc:
            raise Refusal(422, "bad_multipart", str(exc)) from None
        try:
            body = _validated(_report_fields(form))
            return body, await store_uploaded(form, container, already=len(body.photos))
        finally:
            await form.close()
    raw = await request.body()
    return _validated(_json_body(raw, content_type)), []


def _json_body(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    subtype = content_type.split(";")[0].strip().lower()
    if subtype and subtype != "application/json" and not subtype.endswith("+json"):
        raise RequestValidationError(
            [
                {
                    "type": "content_type",
                    "loc": ("body",),
                    "msg": "send application/json or multipart/form-data",
                }
            ]
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", pos), "msg": "JSON decode error"}]
        ) from None


def _report_fields(form: FormData) -> Any:
    if "report" in form:
        text = form["report"]
        if not isinstance(text, str):
            raise Refusal(422, "bad_multipart", "the `report` part must be JSON text, not a file")
        return _json_body(text.encode(), "application/json")
    fields: dict[str, Any] = {k: v for k, v in form.multi_items() if isinstance(v, str)}
    reporter = {k: fields.pop(f"reporter_{k}") for k in ("name", "phone") if f"reporter_{k}" in fields}
    if reporter:
        fields["reporter"] = reporter
    return fields


def _validated(obj: Any) -> ReportIn:
    try:
        return ReportIn.model_validate(obj)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI cannot resolve a model's local `$defs`; the request body schema is inlined instead."""
    defs = schema.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return walk(defs[ref.removeprefix("#/$defs/")])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(schema)  # type: ignore[no-any-return]


_REPORT_SCHEMA = _inline_defs(ReportIn.model_json_schema())
REPORT_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _REPORT_SCHEMA},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "report": {"type": "string", "description": "the report as JSON (as the JSON body)"},
                        "photos": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "JPEG, PNG or WebP files",
                        },
                    },
                }
            },
        },
    }
}
