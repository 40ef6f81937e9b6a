"""Grid routes beyond locate (boundary import, GeoJSON export). Filled in by the grids issue."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["grids"])
