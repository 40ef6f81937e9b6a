"""The pages served by the app itself (command-centre screen, supervisor console, field report page)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
