"""Request bodies. Shape and range checks live here; references (categories, grids) are checked by the routes."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Severity = Literal["normal", "urgent", "major", "critical"]
Source = Literal["grid_worker", "resident", "hotline", "open311", "sensor"]


class Reporter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=50)
    phone: str | None = Field(default=None, max_length=20, pattern=r"^[0-9+\- ]{3,20}$")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lon: float = Field(ge=-180, le=180, description="WGS-84 longitude")
    lat: float = Field(ge=-90, le=90, description="WGS-84 latitude")
    category: str = Field(min_length=1, max_length=40)
    severity: Severity = "normal"
    description: str = Field(min_length=1, max_length=4000)
    address: str | None = Field(default=None, max_length=200)
    reporter: Reporter | None = None
    source: Source | None = None
    photos: list[str] = Field(default_factory=list, max_length=9)
    coord_sys: Literal["wgs84", "gcj02", "bd09"] = Field(default="wgs84", description="coordinate system of lon/lat; stored as WGS-84")

    @field_validator("lon", "lat", mode="before")
    @classmethod
    def not_a_boolean(cls, v: object) -> object:
        if isinstance(v, bool):  # JSON true/false would otherwise pass as 1.0/0.0
            raise ValueError("coordinates must be numbers")
        return v

    @field_validator("lon", "lat")
    @classmethod
    def finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("coordinates must be finite numbers")
        return v

    @field_validator("description")
    @classmethod
    def not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("description must not be blank")
        return v


class DepartmentsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lead: str = Field(min_length=1, max_length=60)
    co: list[str] = Field(default_factory=list, max_length=20)


class ExtensionIn(BaseModel):
    """How much more time a 延期 request asks for."""

    model_config = ConfigDict(extra="forbid")
    value: int = Field(ge=1, le=10_000)
    unit: Literal["minutes", "hours", "work_hours", "work_days"]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(min_length=1, max_length=40)
    note: str | None = Field(default=None, max_length=2000)
    departments: DepartmentsIn | None = None
    rating: int | None = Field(default=None, ge=1, le=5)
    target: str | None = Field(default=None, max_length=40)
    expected_version: int | None = Field(default=None, ge=1)
    extension: ExtensionIn | None = None
