"""Possible duplicates of a new report (重复上报): same category, nearby, recent, still open.

A grid worker knows the street, so 250 m; a dispatcher taking hotline calls gets a wider 1,000 m net.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dispatch import models as m
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
    stmt = select(
        m.Incident.id, m.Incident.lon, m.Incident.lat, m.Incident.state, m.Incident.created_at
    ).where(
        m.Incident.category == category,
        m.Incident.id != incident_id,
        m.Incident.state.not_in(OPEN_STATES_EXCLUDED),
        m.Incident.created_at >= now - window,
        m.Incident.lon.between(lon - dlon, lon + dlon),
        m.Incident.lat.between(lat - dlat, lat + dlat),
    )
    stmt = stmt.order_by(m.Incident.created_at.desc()).limit(CANDIDATE_SCAN)
    # Read on the caller's connection: inside a write transaction a second pooled connection could wait for
    # a pool slot held by writers queued behind this one.
    rows = session.execute(stmt).all()
    near = sorted(
        (distance_m(lon, lat, x, y), i, st, c) for i, x, y, st, c in rows if distance_m(lon, lat, x, y) <= radius
    )[:20]
    return [
        {"id": i, "distance_m": round(dist, 1), "state": st, "created_at": utc(c).isoformat()}
        for dist, i, st, c in near
    ]
