"""Open311 GeoReport v2 at `/open311/v2` (SPEC §6), JSON and XML, following the public specification.

Mapping: categories are services; incidents are service requests, `open` until closed, rejected or merged;
`agency_responsible` is the unit handling the case now (its tier's unit, or the lead department during
coordinated handling); `expected_datetime` is its earliest running deadline; `jurisdiction_id` is the county
code. Errors are the spec's list of `{code, description}` with the HTTP status in `code`.

Reads are public, as GeoReport intends, and carry only the fields the spec lists: never the reporter's name
or phone. POST needs an Open311 `api_key` (dispatch/open311_keys.py). Every request posted also gets a token,
so clients written for token-issuing servers work unchanged (`tokens/{token}` resolves it).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, Request
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from dispatch import models as m
from dispatch.bootstrap import Container
from dispatch.clock import utc
from dispatch.domain import SEVERITIES, NewReport, Refusal
from dispatch.logs import bind_incident, redact
from dispatch.open311_keys import holder_of
from dispatch.service import to_domain
from dispatch.views import STATE_ZH

_BOTH: dict[str, Any] = {"content": {"application/json": {}, "text/xml": {}}}
# Documented for OpenAPI: every answer comes as JSON or XML after the resource's extension.
RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {**_BOTH, "description": "the resource"},
    400: {**_BOTH, "description": "errors: [{code, description}]"},
    403: {**_BOTH, "description": "errors: [{code, description}]"},
    404: {**_BOTH, "description": "errors: [{code, description}]"},
}
router = APIRouter(prefix="/open311/v2", tags=["open311"], responses=RESPONSES)
FINAL = ("closed", "rejected", "merged")
DISCOVERY_CHANGESET = "2026-11-29T00:00:00Z"  # when this interface last changed
MAX_RECORDS = 1000
MAX_RANGE = timedelta(days=90)
TOKEN_PREFIX = "open311:"  # idempotency key of a posted request = prefix + its token
SEVERITY_ZH = {"normal": "一般", "urgent": "紧急", "major": "重大", "critical": "特别重大"}
# The spec's field lists, in its order; every response carries exactly these.
SERVICE_FIELDS = ("service_code", "service_name", "description", "metadata", "type", "keywords", "group")
REQUEST_FIELDS = (
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
)


class Open311Error(Exception):
    def __init__(self, status: int, description: str) -> None:
        self.status, self.description = status, description


# ---------------------------------------------------------------- rendering


def w3(dt: datetime | None) -> str | None:
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


def _xml_value(parent: ET.Element, tag: str, value: Any) -> None:
    el = ET.SubElement(parent, tag)
    if isinstance(value, list):
        for item in value:
            child_tag, child = item
            if isinstance(child, dict):
                _xml_dict(el, child_tag, child)
            else:
                _xml_value(el, child_tag, child)
    elif isinstance(value, bool):
        el.text = "true" if value else "false"
    elif value is not None:
        el.text = str(value)


def _xml_dict(parent: ET.Element, tag: str, fields: dict[str, Any]) -> None:
    el = ET.SubElement(parent, tag)
    for key, value in fields.items():
        _xml_value(el, key, value)


def xml_document(root: str, item: str | None, body: Any) -> bytes:
    """`root` holding one `item` element per dict (lists), or the dict's fields directly (item None)."""
    top = ET.Element(root)
    if item is None:
        for key, value in body.items():
            _xml_value(top, key, value)
    else:
        for entry in body:
            _xml_dict(top, item, entry)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(top, encoding="utf-8")


def render(fmt: str, body: Any, root: str, item: str | None, status: int = 200) -> Response:
    if fmt == "xml":
        return Response(xml_document(root, item, body), status, media_type="text/xml; charset=utf-8")
    return Response(orjson.dumps(body), status, media_type="application/json; charset=utf-8")


def render_error(fmt: str, status: int, description: str) -> Response:
    errors = [{"code": status, "description": description}]
    if fmt == "xml":
        return render("xml", errors, "errors", "error", status)
    return render("json", errors, "errors", "error", status)


async def guarded(fmt: str, work: Callable[[], Awaitable[Response]]) -> Response:
    """Every failure in the spec's error format (JSON when the format itself is wrong)."""
    if fmt not in ("json", "xml"):
        return render_error("json", 400, f"unsupported format {fmt!r}; use .json or .xml")
    try:
        return await work()
    except Open311Error as e:
        return render_error(fmt, e.status, e.description)
    except Refusal as r:
        return render_error(fmt, 400 if r.status == 422 else r.status, str(r.detail))


# ---------------------------------------------------------------- shaping


def _container(request: Request) -> Container:
    return request.app.state.container  # type: ignore[no-any-return]


def _check_jurisdiction(c: Container, jurisdiction_id: str | None) -> None:
    if jurisdiction_id and jurisdiction_id not in c.tree.counties:
        raise Open311Error(404, f"jurisdiction_id {jurisdiction_id} is not served here")


def _departments(c: Container) -> dict[str, str]:
    with c.db.read() as s:
        return {d.code: d.name for d in s.execute(select(m.Department)).scalars()}


def _lead_departments(c: Container) -> dict[str, str | None]:
    with c.db.read() as s:
        return {x.code: x.lead_department for x in s.execute(select(m.Category)).scalars()}


def service(code: str, name: str, lead: str | None, departments: dict[str, str]) -> dict[str, Any]:
    group = departments.get(lead or "", "")
    return {
        "service_code": code,
        "service_name": name,
        "description": f"{name}（主办部门：{group}）" if group else name,
        "metadata": True,  # every service takes a severity attribute (services/{code})
        "type": "realtime",
        "keywords": f"{code},{name}",
        "group": group,
    }


def service_definition(code: str) -> dict[str, Any]:
    values = [("value", {"key": s, "name": f"{SEVERITY_ZH[s]} ({s})"}) for s in SEVERITIES]
    attribute = {
        "variable": True,
        "code": "severity",
        "datatype": "singlevaluelist",
        "required": False,
        "datatype_description": "等级 severity; major and critical enter at a higher tier (越级上报)",
        "order": 1,
        "description": "等级 Severity",
        "values": values,
    }
    return {"service_code": code, "attributes": [("attribute", attribute)]}


def _definition_json(d: dict[str, Any]) -> dict[str, Any]:
    """The XML shape keeps (tag, dict) pairs for repeated children; JSON wants plain lists."""
    attrs = []
    for _, a in d["attributes"]:
        attrs.append({**a, "values": [v for _, v in a["values"]]})
    return {"service_code": d["service_code"], "attributes": attrs}


def service_request(c: Container, row: m.Incident, departments: dict[str, str]) -> dict[str, Any]:
    inc = to_domain(row)
    final = inc.state in FINAL
    lead = next((d.department for d in inc.departments if d.role == "lead"), None)
    if inc.state == "coordinated_handling" and lead:
        agency = departments.get(lead, lead)
    else:
        unit = inc.unit_at(inc.tier)
        agency = c.tree.name(unit) or unit
    due = min((d.due_at for d in inc.deadlines if d.clock != "supervise"), default=None)
    notes = f"{STATE_ZH.get(inc.state, inc.state)} ({inc.state}, tier {inc.tier})"
    if inc.merged_into:
        notes += f"; merged into {inc.merged_into}"
    return {
        "service_request_id": inc.id,
        "status": "closed" if final else "open",
        "status_notes": notes,
        "service_name": c.categories.get(inc.category, inc.category),
        "service_code": inc.category,
        "description": redact(row.description),  # public: a phone number typed into the text is masked
        "agency_responsible": agency,
        "service_notice": None,
        "requested_datetime": w3(inc.created_at),
        "updated_datetime": w3(row.updated_at),
        "expected_datetime": None if final else w3(due),
        "address": row.address,
        "address_id": None,
        "zipcode": None,
        "lat": inc.lat,
        "long": inc.lon,
        "media_url": None,
    }


def _parse_time(name: str, raw: str | None) -> datetime | None:
    if not raw:
        return None
    try:
        return utc(datetime.fromisoformat(raw))
    except ValueError:
        raise Open311Error(400, f"{name} must be a w3 datetime such as 2026-11-30T09:00:00Z") from None


def _csv(raw: str | None) -> list[str]:
    return [x.strip() for x in (raw or "").split(",") if x.strip()]


def find_requests(c: Container, params: dict[str, str]) -> list[dict[str, Any]]:
    _check_jurisdiction(c, params.get("jurisdiction_id"))
    stmt = select(m.Incident)
    ids = _csv(params.get("service_request_id"))
    if ids:  # overrides every other filter (spec)
        stmt = stmt.where(m.Incident.id.in_(ids[:MAX_RECORDS]))
    else:
        now = c.clock.now()
        start = _parse_time("start_date", params.get("start_date"))
        end = _parse_time("end_date", params.get("end_date"))
        end = end or (start + MAX_RANGE if start else now)
        start = start or end - MAX_RANGE
        if end < start:
            raise Open311Error(400, "end_date is before start_date")
        if end - start > MAX_RANGE:
            raise Open311Error(400, "start_date and end_date may not span more than 90 days")
        stmt = stmt.where(m.Incident.created_at >= start, m.Incident.created_at <= end)
        codes = _csv(params.get("service_code"))
        if codes:
            stmt = stmt.where(m.Incident.category.in_(codes))
        statuses = set(_csv(params.get("status")))
        if statuses - {"open", "closed"}:
            raise Open311Error(400, "status must be open, closed or both")
        if statuses == {"open"}:
            stmt = stmt.where(m.Incident.state.not_in(FINAL))
        elif statuses == {"closed"}:
            stmt = stmt.where(m.Incident.state.in_(FINAL))
    if params.get("jurisdiction_id"):
        stmt = stmt.where(m.Incident.county == params["jurisdiction_id"])
    stmt = stmt.order_by(m.Incident.created_at.desc(), m.Incident.id.desc()).limit(MAX_RECORDS)
    departments = _departments(c)
    with c.db.read() as s:
        rows = list(s.execute(stmt).scalars())
    return [service_request(c, r, departments) for r in rows]


# ---------------------------------------------------------------- posting


def _locate(c: Container, form: dict[str, str]) -> tuple[float, float]:
    """lat/long, else an `address_id` that is a unit code, else the longest unit name in `address_string`
    (our small gazetteer: township, community and grid names). The point is the unit's inner point."""
    lat, lon = form.get("lat"), form.get("long")
    if lat and lon:
        try:
            return float(lon), float(lat)
        except ValueError:
            raise Open311Error(400, "lat and long must be numbers (WGS-84)") from None
    units = c.tree.units
    code = form.get("address_id")
    if code and code in units:
        p = units[code].geometry.representative_point()
        return p.x, p.y
    address = form.get("address_string") or ""
    named = [u for u in units.values() if u.level != "county" and u.name and u.name in address]
    if named:
        best = max(named, key=lambda u: (len(u.name), len(u.code)))
        p = best.geometry.representative_point()
        return p.x, p.y
    if address or code:
        raise Open311Error(400, "the address could not be located; send lat and long (WGS-84)")
    raise Open311Error(400, "a location is required: lat and long, address_string or address_id")


def new_report(c: Container, form: dict[str, str]) -> NewReport:
    code = form.get("service_code") or ""
    if not code:
        raise Open311Error(400, "service_code is required")
    if code not in c.categories:
        raise Open311Error(404, f"service_code {code} not found")
    severity = form.get("attribute[severity]") or "normal"
    if severity not in SEVERITIES:
        raise Open311Error(400, f"attribute[severity] must be one of {', '.join(SEVERITIES)}")
    lon, lat = _locate(c, form)
    name = " ".join(x for x in (form.get("last_name"), form.get("first_name")) if x) or None
    media = form.get("media_url")
    description = (form.get("description") or "").strip() or c.categories[code]
    if media:
        description += f"\n[media] {media}"
    return NewReport(
        lon=lon,
        lat=lat,
        category=code,
        severity=severity,
        description=description[:4000],
        source="open311",
        address=form.get("address_string") or None,
        reporter_name=name,
        reporter_phone=form.get("phone") or None,
    )


# ---------------------------------------------------------------- routes


@router.get("/discovery.{fmt}")
async def discovery(fmt: str, request: Request) -> Response:
    """Service discovery (Open311), for clients that start from it."""

    async def work() -> Response:
        base = str(request.base_url).rstrip("/") + router.prefix
        formats = ["text/xml", "application/json"]
        endpoint = {
            "specification": "http://wiki.open311.org/GeoReport_v2",
            "url": base,
            "changeset": DISCOVERY_CHANGESET,
            "type": "production",
            "formats": formats,
        }
        body = {
            "changeset": DISCOVERY_CHANGESET,
            "contact": "county command centre (县指挥中心)",
            "key_service": "griddispatch apikeys add <label> --county <code>",
            "endpoints": [endpoint],
        }
        if fmt == "xml":
            xml_endpoint = {**endpoint, "formats": [("format", f) for f in formats]}
            return render("xml", {**body, "endpoints": [("endpoint", xml_endpoint)]}, "discovery", None)
        return render("json", body, "discovery", None)

    return await guarded(fmt, work)


@router.get("/services.{fmt}")
async def services(fmt: str, request: Request, jurisdiction_id: str | None = None) -> Response:
    async def work() -> Response:
        c = _container(request)
        _check_jurisdiction(c, jurisdiction_id)
        departments, leads = await run_in_threadpool(lambda: (_departments(c), _lead_departments(c)))
        body = [service(code, name, leads.get(code), departments) for code, name in c.categories.items()]
        return render(fmt, body, "services", "service")

    return await guarded(fmt, work)


@router.get("/services/{code}.{fmt}")
async def service_definition_route(
    code: str, fmt: str, request: Request, jurisdiction_id: str | None = None
) -> Response:
    async def work() -> Response:
        c = _container(request)
        _check_jurisdiction(c, jurisdiction_id)
        if code not in c.categories:
            raise Open311Error(404, f"service_code {code} not found")
        d = service_definition(code)
        if fmt == "xml":
            return render("xml", d, "service_definition", None)
        return render("json", _definition_json(d), "", None)

    return await guarded(fmt, work)


@router.get("/requests.{fmt}")
async def requests_list(fmt: str, request: Request) -> Response:
    async def work() -> Response:
        c = _container(request)
        body = await run_in_threadpool(find_requests, c, dict(request.query_params))
        return render(fmt, body, "service_requests", "request")

    return await guarded(fmt, work)


@router.post("/requests.{fmt}", status_code=201, responses={201: {**_BOTH, "description": "id and token"}})
async def requests_create(fmt: str, request: Request) -> Response:
    async def work() -> Response:
        c = _container(request)
        form = {k: str(v) for k, v in (await request.form()).items()}
        holder = await run_in_threadpool(holder_of, c.db, form.get("api_key"))
        if holder is None:
            raise Open311Error(403, "a valid api_key is required to post a service request")
        _check_jurisdiction(c, form.get("jurisdiction_id"))
        report = new_report(c, form)
        token = secrets.token_urlsafe(12)
        view = await run_in_threadpool(c.service.submit_report, report, holder.actor, TOKEN_PREFIX + token)
        bind_incident(view["id"])
        body = [
            {
                "service_request_id": view["id"],
                "token": token,
                "service_notice": f"已受理，当前环节：{view['state_zh']}",
                "account_id": None,
            }
        ]
        return render(fmt, body, "service_requests", "request", status=201)

    return await guarded(fmt, work)


@router.get("/requests/{request_id}.{fmt}")
async def request_one(request_id: str, fmt: str, request: Request) -> Response:
    async def work() -> Response:
        c = _container(request)
        found = await run_in_threadpool(find_requests, c, {"service_request_id": request_id})
        if not found:
            raise Open311Error(404, f"service_request_id {request_id} not found")
        bind_incident(request_id)
        return render(fmt, found, "service_requests", "request")

    return await guarded(fmt, work)


@router.get("/tokens/{token}.{fmt}")
async def token_lookup(token: str, fmt: str, request: Request) -> Response:
    async def work() -> Response:
        c = _container(request)

        def lookup() -> str | None:
            with c.db.read() as s:
                return s.execute(
                    select(m.IdempotencyRecord.incident_id).where(
                        m.IdempotencyRecord.key == TOKEN_PREFIX + token
                    )
                ).scalar_one_or_none()

        incident_id = await run_in_threadpool(lookup)
        if incident_id is None:
            raise Open311Error(404, f"token {token} not found")
        return render(
            fmt, [{"service_request_id": incident_id, "token": token}], "service_requests", "request"
        )

    return await guarded(fmt, work)
