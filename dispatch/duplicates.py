"""Possible duplicates of a new report (重复上报): same category, nearby, recent, still open.

A grid worker knows the street, so 250 m; a dispatcher taking hotline calls gets a wider 1,000 m net.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from dispatch import models as m
from dispatch.clock import utc
from dispatch.db import Database
from dispatch.domain import Actor

METRES_PER_DEGREE = 111_320.0
OPEN_STATES_EXCLUDED = ("closed", "rejected", "merged")


def radius_for(actor: Actor) -> float:
    return 250.0 if actor.role == "grid_worker" else 1000.0


def distance_m(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Equirectangular distance: exact enough within a kilometre."""
    dx = (lon2 - lon1) * METRES_PER_DEGREE * math.cos(math.radians((lat1 + lat2) / 2))
    dy = (lat2 - lat1) * METRES_PER_DEGREE
    return math.hypot(dx, dy)


def find_duplicates(
    db: Database,
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
    with db.read() as s:
        rows = s.execute(stmt).all()
    found = [
        {
            "id": i,
            "distance_m": round(distance_m(lon, lat, x, y), 1),
            "state": st,
            "created_at": utc(c).isoformat(),
        }
        for i, x, y, st, c in rows
    ]
    return sorted((f for f in found if f["distance_m"] <= radius), key=lambda f: f["distance_m"])[:20]
