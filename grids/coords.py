"""GCJ-02 <-> WGS-84 coordinate conversion.

Chinese web-map providers (AMap/Gaode, Tencent, the cnmaps boundary data shipped in
``fixtures/data``) publish coordinates in GCJ-02, a deliberately obfuscated datum that
shifts points by a few hundred metres. Field devices (GPS, Beidou) report WGS-84. Mixing
the two would put an event on the wrong street, so everything stored by the engine is
WGS-84 and GCJ-02 input is converted at the edge with these functions.

The forward transform is the widely published closed-form approximation (Krasovsky 1940
ellipsoid, fixed polynomial/sine offset). There is no closed-form inverse, so
:func:`gcj02_to_wgs84` solves ``wgs84_to_gcj02(w) == g`` by fixed-point iteration; the
offset changes by well under 1 % per degree, so each step gains several digits.

The numpy functions (``*_array``) are the primary implementation: a whole geometry's
coordinate array converts in one call. The scalar functions are thin wrappers.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry.base import BaseGeometry

__all__ = [
    "COORD_SYSTEMS",
    "bd09_to_gcj02",
    "bd09_to_gcj02_array",
    "bd09_to_wgs84_array",
    "transform_geometry_to_wgs84",
    "gcj02_to_bd09",
    "gcj02_to_wgs84",
    "to_wgs84",
    "gcj02_to_wgs84_array",
    "in_china",
    "transform_geometry_gcj02_to_wgs84",
    "transform_geometry_wgs84_to_gcj02",
    "wgs84_to_gcj02",
    "wgs84_to_gcj02_array",
]

# Krasovsky 1940 ellipsoid: the GCJ-02 formula is defined on it, not on WGS-84's.
KRASOVSKY_A = 6378245.0
KRASOVSKY_EE = 0.00669342162296594323

# The obfuscation is only applied inside this rough bounding box of China; outside it
# GCJ-02 and WGS-84 coincide by definition.
_CHINA_LON = (72.004, 137.8347)
_CHINA_LAT = (0.8293, 55.8271)

# The iteration is stopped well below the 1e-9 degree (~0.1 mm) contract so that
# floating-point noise in the last step cannot push the result over it.
_INVERSE_TOLERANCE_DEG = 1e-12
_INVERSE_MAX_STEPS = 30

FloatArray = npt.NDArray[np.float64]


def in_china(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """True where the GCJ-02 offset applies (inside China's rough bounding box)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    return (lon >= _CHINA_LON[0]) & (lon <= _CHINA_LON[1]) & (lat >= _CHINA_LAT[0]) & (lat <= _CHINA_LAT[1])


def _lat_offset_term(x: FloatArray, y: FloatArray) -> FloatArray:
    """Latitude term of the published offset polynomial, in the formula's own units."""
    base = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * np.sqrt(np.abs(x))
    wobble = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    wobble += (20.0 * np.sin(y * np.pi) + 40.0 * np.sin(y / 3.0 * np.pi)) * 2.0 / 3.0
    wobble += (160.0 * np.sin(y / 12.0 * np.pi) + 320.0 * np.sin(y * np.pi / 30.0)) * 2.0 / 3.0
    return base + wobble


def _lon_offset_term(x: FloatArray, y: FloatArray) -> FloatArray:
    """Longitude term of the published offset polynomial, in the formula's own units."""
    base = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * np.sqrt(np.abs(x))
    wobble = (20.0 * np.sin(6.0 * x * np.pi) + 20.0 * np.sin(2.0 * x * np.pi)) * 2.0 / 3.0
    wobble += (20.0 * np.sin(x * np.pi) + 40.0 * np.sin(x / 3.0 * np.pi)) * 2.0 / 3.0
    wobble += (150.0 * np.sin(x / 12.0 * np.pi) + 300.0 * np.sin(x / 30.0 * np.pi)) * 2.0 / 3.0
    return base + wobble


def _gcj02_offset_deg(lon: FloatArray, lat: FloatArray) -> tuple[FloatArray, FloatArray]:
    """GCJ-02 minus WGS-84 in degrees at WGS-84 position (lon, lat), ignoring the China mask."""
    # The polynomial is centred on (105E, 35N), roughly the middle of China.
    x = lon - 105.0
    y = lat - 35.0
    dlat = _lat_offset_term(x, y)
    dlon = _lon_offset_term(x, y)
    # Scale by the Krasovsky meridian / prime-vertical radii to turn the offset into degrees.
    rad_lat = np.radians(lat)
    w = 1.0 - KRASOVSKY_EE * np.sin(rad_lat) ** 2
    sqrt_w = np.sqrt(w)
    dlat = (dlat * 180.0) / ((KRASOVSKY_A * (1.0 - KRASOVSKY_EE)) / (w * sqrt_w) * np.pi)
    dlon = (dlon * 180.0) / (KRASOVSKY_A / sqrt_w * np.cos(rad_lat) * np.pi)
    return dlon, dlat


def wgs84_to_gcj02_array(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Vectorised WGS-84 -> GCJ-02; points outside China pass through unchanged."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    dlon, dlat = _gcj02_offset_deg(lon, lat)
    inside = in_china(lon, lat)
    return np.where(inside, lon + dlon, lon), np.where(inside, lat + dlat, lat)


def gcj02_to_wgs84_array(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Vectorised GCJ-02 -> WGS-84 by fixed-point iteration; outside China passes through.

    Whether a point is "in China" is decided on the GCJ-02 input, which is what the
    caller actually holds; the bbox is so coarse that the distinction never matters.
    """
    g_lon = np.asarray(lon, dtype=np.float64)
    g_lat = np.asarray(lat, dtype=np.float64)
    inside = in_china(g_lon, g_lat)
    # Starting from "offset evaluated at the GCJ point" is already within ~1e-5 degrees.
    dlon, dlat = _gcj02_offset_deg(g_lon, g_lat)
    w_lon, w_lat = g_lon - dlon, g_lat - dlat
    for _ in range(_INVERSE_MAX_STEPS):
        dlon, dlat = _gcj02_offset_deg(w_lon, w_lat)
        err_lon = (w_lon + dlon) - g_lon
        err_lat = (w_lat + dlat) - g_lat
        w_lon = w_lon - err_lon
        w_lat = w_lat - err_lat
        residual = np.maximum(np.abs(err_lon), np.abs(err_lat))
        if residual.size == 0 or float(np.max(residual)) < _INVERSE_TOLERANCE_DEG:
            break
    return np.where(inside, w_lon, g_lon), np.where(inside, w_lat, g_lat)


def wgs84_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """Convert one WGS-84 point (e.g. from a device) to GCJ-02 (for web-map display)."""
    out_lon, out_lat = wgs84_to_gcj02_array(lon, lat)
    return float(out_lon), float(out_lat)


def gcj02_to_wgs84(lon: float, lat: float) -> tuple[float, float]:
    """Convert one GCJ-02 point (web-map / cnmaps data) to WGS-84 (storage datum)."""
    out_lon, out_lat = gcj02_to_wgs84_array(lon, lat)
    return float(out_lon), float(out_lat)


def _xy_transformer(convert):
    """Adapt a (lon, lat) array converter to shapely.transform's (N, 2) array callback."""

    def apply(coords: FloatArray) -> FloatArray:
        out_lon, out_lat = convert(coords[:, 0], coords[:, 1])
        return np.column_stack([out_lon, out_lat])

    return apply


def transform_geometry_gcj02_to_wgs84(geom: BaseGeometry) -> BaseGeometry:
    """Convert every vertex of a GCJ-02 geometry to WGS-84 in one vectorised pass.

    Only vertices move: the offset varies by well under a millimetre across a typical
    edge, so re-densifying edges would add vertices without adding accuracy.
    """
    return shapely.transform(geom, _xy_transformer(gcj02_to_wgs84_array))


def transform_geometry_wgs84_to_gcj02(geom: BaseGeometry) -> BaseGeometry:
    """Convert every vertex of a WGS-84 geometry to GCJ-02 (for web-map overlays)."""
    return shapely.transform(geom, _xy_transformer(wgs84_to_gcj02_array))


# BD-09 (Baidu) is GCJ-02 with a further rotation and scaling about the origin; the published forward formula
# is inverted the same way Baidu's own SDK documentation describes.
_BD_X_PI = math.pi * 3000.0 / 180.0


def bd09_to_gcj02(lon: float, lat: float) -> tuple[float, float]:
    x, y = lon - 0.0065, lat - 0.006
    z = math.hypot(x, y) - 0.00002 * math.sin(y * _BD_X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _BD_X_PI)
    return z * math.cos(theta), z * math.sin(theta)


def gcj02_to_bd09(lon: float, lat: float) -> tuple[float, float]:
    z = math.hypot(lon, lat) + 0.00002 * math.sin(lat * _BD_X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _BD_X_PI)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def bd09_to_gcj02_array(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Vectorised BD-09 -> GCJ-02 (the same published formula as :func:`bd09_to_gcj02`)."""
    x = np.asarray(lon, dtype=np.float64) - 0.0065
    y = np.asarray(lat, dtype=np.float64) - 0.006
    z = np.hypot(x, y) - 0.00002 * np.sin(y * _BD_X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _BD_X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def bd09_to_wgs84_array(lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    return gcj02_to_wgs84_array(*bd09_to_gcj02_array(lon, lat))


COORD_SYSTEMS = ("wgs84", "gcj02", "bd09")


def transform_geometry_to_wgs84(geom: BaseGeometry, coord_sys: str) -> BaseGeometry:
    """A geometry whose lon/lat are in `coord_sys` (a boundary file declared GCJ-02 or BD-09) as WGS-84."""
    if coord_sys == "wgs84":
        return geom
    if coord_sys == "gcj02":
        return transform_geometry_gcj02_to_wgs84(geom)
    if coord_sys == "bd09":
        return shapely.transform(geom, _xy_transformer(bd09_to_wgs84_array))
    raise ValueError(f"unknown coordinate system {coord_sys!r}")


def to_wgs84(lon: float, lat: float, coord_sys: str = "wgs84") -> tuple[float, float]:
    """A reported point in the phone's coordinate system (`wgs84`, `gcj02` or `bd09`) as stored: WGS-84."""
    if coord_sys == "wgs84":
        return lon, lat
    if coord_sys == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if coord_sys == "bd09":
        return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))
    raise ValueError(f"unknown coordinate system {coord_sys!r}")
