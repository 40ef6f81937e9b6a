"""Possible duplicates of a new report (重复上报): same category, nearby, recent, still open.

A grid worker knows the street, so 250 m; a dispatcher taking hotline calls gets a wider 1,000 m net.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from dispatch.clock import utc
from dispatch.domain import Actor

METRES_PER_DEGREE = 111_320.0
OPEN_STATES_EXCLUDED = ("closed", "rejected", "merged")
CANDIDATE_SCAN = 200  # newest candidates looked at; a flood of reports at one spot must not slow intake


def radius_for(actor: Actor) -> float:
    return 250.0 if actor.role == "grid_worker" else 1000.0


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Equirectangular distance: exact enough within a kilometre."""
    dx = (lon2 - lon1) * METRES_PER_DEGREE * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * METRES_PER_DEGREE
    return math.hypot(dx, dy)


def find_duplicates(
    session: Session,
    incident_id: str,
    category: str,
    lon: float,
    lat: float,
    actor: Actor,
    now: datetime,
    window: timedelta,
) -> list[dict[str, Any]]:
    radius = radius_for(actor)
    dlat = radius / METRES_PER_DEGREE
    dlon = radius / (METRES_PER_DEGREE * max(0.01, math.cos(math.radians(lat))))
    # Plain SQL on the driver: this runs once per report, and SQLAlchemy's statement building costs more here
    # than the query (bench/ingest.py). The bounding box and the newest-first limit keep it an index walk.
    conn = session.connection()
    sqlite = conn.dialect.name == "sqlite"
    mark = "?" if sqlite else "%s"
    since = now - window
    sql = (
        "SELECT id, lon, lat, state, created_at FROM incident "
        f"WHERE category = {mark} AND id <> {mark} AND state NOT IN ('closed', 'rejected', 'merged') "
        f"AND created_at >= {mark} AND lon BETWEEN {mark} AND {mark} AND lat BETWEEN {mark} AND {mark} "
        f"ORDER BY created_at DESC LIMIT {CANDIDATE_SCAN}"
    )
    # SQLite keeps timestamps as naive UTC text in SQLAlchemy's format, which sqlite3's adapter also writes.
    since_param = since.astimezone(UTC).replace(tzinfo=None) if sqlite else since
    params = (category, incident_id, since_param, lon - dlon, lon + dlon, lat - dlat, lat + dlat)
    rows = conn.exec_driver_sql(sql, params).all()
    near = sorted(
        (distance_m(lon, lat, x, y), i, st, c)
        for i, x, y, st, c in rows
        if distance_m(lon, lat, x, y) <= radius
    )[:20]
    return [
        {"id": i, "distance_m": round(dist, 1), "state": st, "created_at": _iso(c)} for dist, i, st, c in near
    ]


def _iso(value: datetime | str) -> str:
    if isinstance(value, str):  # SQLite text
        value = datetime.fromisoformat(value)
    return utc(value).isoformat()
