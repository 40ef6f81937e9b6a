"""Reading and writing boundary files (SPEC §2): GeoJSON, GeoPackage, zipped Shapefile.

Whatever the county's GIS tool exported, what comes out is WGS-84 lon/lat:
- a CRS in the file (or declared with ``crs``, e.g. ``EPSG:4547`` CGCS2000 / 3-degree GK) is converted with
  pyproj through geopandas;
- a file without a CRS is WGS-84 only if it is GeoJSON (RFC 7946 says so); GeoPackage and Shapefile without
  one are refused (``missing_crs``) rather than guessed;
- ``coord_sys`` ``gcj02`` / ``bd09`` says the lon/lat are web-map offsets (not EPSG codes, so pyproj cannot
  know them); they are removed with :mod:`grids.coords`.
No database here: the caller stores what validates.
"""

from __future__ import annotations

import math
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import geopandas as gpd
import pyogrio
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from grids.coords import COORD_SYSTEMS, transform_geometry_to_wgs84
from grids.validate import BoundaryUnit

FORMATS = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG", ".zip": "ESRI Shapefile"}
REQUIRED = ("code", "name", "level", "parent")

Progress = Callable[[int, int], None]


class BoundaryFileError(ValueError):
    """The file cannot be read as a boundary file at all (before any unit can be validated)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def _text(value: object) -> str:
    """A property as text: codes exported as numbers (360102.0) become '360102'; empty/NaN become ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _source_path(path: Path) -> str:
    if path.suffix.lower() != ".zip":
        return str(path)
    with zipfile.ZipFile(path) as archive:
        shapefiles = [n for n in archive.namelist() if n.lower().endswith(".shp")]
    if len(shapefiles) != 1:
        raise BoundaryFileError("bad_archive", f"the zip must hold exactly one .shp, found {len(shapefiles)}")
    return f"/vsizip/{path}/{shapefiles[0]}"


def read_frame(path: Path, crs: str | None = None) -> gpd.GeoDataFrame:
    """The file's features in WGS-84 (EPSG:4326), or a BoundaryFileError saying why not."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise BoundaryFileError(
            "unsupported_format", f"{path.name}: expected .geojson, .json, .gpkg or a zipped Shapefile (.zip)"
        )
    try:
        source = _source_path(path)
        frame = gpd.read_file(source, engine="pyogrio")
    except BoundaryFileError:
        raise
    except (
        pyogrio.errors.DataSourceError,
        pyogrio.errors.DataLayerError,
        zipfile.BadZipFile,
        OSError,
        shapely.errors.GEOSException,  # e.g. a ring of two points: not a polygon at all
        ValueError,
    ) as exc:
        raise BoundaryFileError("unreadable_file", f"{path.name} cannot be read: {exc}") from None
    missing = [p for p in REQUIRED if p not in frame.columns]
    if missing:
        raise BoundaryFileError(
            "missing_property", f"features lack the properties {missing} (need code, name, level, parent)"
        )
    if crs:
        try:
            declared = CRS.from_user_input(crs)
        except CRSError as exc:
            raise BoundaryFileError("bad_crs", f"unknown CRS {crs!r}: {exc}") from None
        frame = frame.set_crs(declared, allow_override=True)
    elif frame.crs is None:
        if FORMATS[suffix] != "GeoJSON":
            raise BoundaryFileError(
                "missing_crs", f"{path.name} declares no CRS; declare it (e.g. crs=EPSG:4490) to import it"
            )
        frame = frame.set_crs("EPSG:4326")
    if not frame.crs.equals(CRS.from_epsg(4326)):
        frame = frame.to_crs("EPSG:4326")
    return frame


def read_boundary_file(
    path: Path, *, crs: str | None = None, coord_sys: str = "wgs84", progress: Progress | None = None
) -> list[BoundaryUnit]:
    if coord_sys not in COORD_SYSTEMS:
        raise BoundaryFileError("bad_coord_sys", f"coord_sys must be one of {', '.join(COORD_SYSTEMS)}")
    frame = read_frame(path, crs)
    units: list[BoundaryUnit] = []
    total = len(frame)
    columns = [frame[p].tolist() for p in REQUIRED]
    for row, (code, name, level, parent, geometry) in enumerate(
        zip(*columns, frame.geometry.tolist(), strict=True), start=1
    ):
        if geometry is not None and coord_sys != "wgs84":
            geometry = transform_geometry_to_wgs84(geometry, coord_sys)
        units.append(
            BoundaryUnit(_text(code), _text(name), _text(level).lower(), _text(parent) or None, geometry, row)
        )
        if progress is not None and (row % 1000 == 0 or row == total):
            progress(row, total)
    return units


def read_boundary_bytes(
    data: bytes, filename: str, *, crs: str | None = None, coord_sys: str = "wgs84"
) -> list[BoundaryUnit]:
    """An uploaded file: written to a private temporary file because GDAL drivers read paths."""
    suffix = Path(filename).suffix.lower()
    if suffix not in FORMATS:
        raise BoundaryFileError(
            "unsupported_format", f"{filename}: expected .geojson, .json, .gpkg or a zipped Shapefile (.zip)"
        )
    with tempfile.TemporaryDirectory(prefix="griddispatch-import-") as directory:
        path = Path(directory) / f"upload{suffix}"
        path.write_bytes(data)
        return read_boundary_file(path, crs=crs, coord_sys=coord_sys)


def write_boundary_file(
    path: Path,
    units: Iterable[tuple[str, str, str, str | None, shapely.Geometry]],
    *,
    simplify_m: float = 0.0,
) -> int:
    """Write (code, name, level, parent, geometry) rows; the format follows the suffix (.zip: Shapefile)."""
    rows = [{"code": c, "name": n, "level": lv, "parent": p or "", "geometry": g} for c, n, lv, p, g in units]
    frame = gpd.GeoDataFrame(rows, geometry="geometry", crs="EPSG:4326")
    if simplify_m > 0:
        frame["geometry"] = shapely.coverage_simplify(frame.geometry.values, simplify_m / 111_320.0)
    path.unlink(missing_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        with tempfile.TemporaryDirectory() as directory:
            shp = Path(directory) / f"{path.stem}.shp"
            frame.to_file(shp, engine="pyogrio", encoding="UTF-8")
            with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
                for part in Path(directory).iterdir():
                    archive.write(part, part.name)
    elif suffix in FORMATS:
        frame.to_file(path, engine="pyogrio", driver=FORMATS[suffix])
    else:
        raise BoundaryFileError("unsupported_format", f"cannot write {path.suffix} files")
    return len(frame)
