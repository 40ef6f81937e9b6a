"""A fine lattice over a grid set that answers most point lookups with one array read.

Each square cell (in degrees) is one of:
- *inside* one grid: no grid boundary comes within ``eps`` of the cell, so every point of the closed cell
  belongs to that grid (stored as the grid's position, >= 0);
- *outside* every grid (stored as -1);
- *boundary*: some ring crosses or touches the cell (stored as ``-2 - b``); its candidates are the grids
  whose rings cross it, in code order, and a point there is tested exactly against them in that order.

Why candidates are only the grids whose rings cross the cell: if a grid has area in a boundary cell but its
ring does not cross the cell, it covers the whole cell, and in a valid coverage (the activation rule) no
other grid can then have a ring there. Sets with overlapping grids are still located by the rings that cross
the cell, but the smallest-code rule inside an overlap is only guaranteed for valid sets.

Boundary cells are found by rasterising every ring segment exactly (column slabs, then the row span of the
segment inside each slab, widened by ``eps``), all in numpy; the owner of each row-run of non-boundary cells
comes from one STRtree point query at the run's first cell centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

OUTSIDE = -1
# Keeps the lattice under ~100 MB whatever the grid density (int32 per cell).
MAX_CELLS = 24_000_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Lattice:
    x0: float
    y0: float
    size: float
    cols: int
    rows: int
    cells: npt.NDArray[np.int32]  # per cell: grid position, OUTSIDE, or -2 - boundary index
    cand_start: IntArray  # boundary cell b has candidates cand_ids[cand_start[b]:cand_start[b + 1]]
    cand_ids: npt.NDArray[np.int32]

    @property
    def boundary_cells(self) -> int:
        return len(self.cand_start) - 1

    # ------------------------------------------------------------------ lookups

    def locate_one(self, geometries: npt.NDArray[np.object_], lon: float, lat: float) -> int:
        fx = (lon - self.x0) / self.size
        fy = (lat - self.y0) / self.size
        if not (0 <= fx < self.cols and 0 <= fy < self.rows):  # also false for NaN
            return OUTSIDE
        col, row = int(fx), int(fy)  # non-negative here, so int() is floor()
        value = int(self.cells[row * self.cols + col])
        if value >= OUTSIDE:
            return value
        b = -2 - value
        for position in self.cand_ids[self.cand_start[b] : self.cand_start[b + 1]]:
            if shapely.intersects_xy(geometries[position], lon, lat):
                return int(position)
        return OUTSIDE

    def locate_many(self, geometries: npt.NDArray[np.object_], x: FloatArray, y: FloatArray) -> IntArray:
        col = np.floor((x - self.x0) / self.size)
        row = np.floor((y - self.y0) / self.size)
        inside = (col >= 0) & (col < self.cols) & (row >= 0) & (row < self.rows)  # NaN compares false
        out = np.full(len(x), OUTSIDE, dtype=np.int64)
        where = np.flatnonzero(inside)
        values = self.cells[row[where].astype(np.int64) * self.cols + col[where].astype(np.int64)]
        out[where] = np.maximum(values, OUTSIDE)
        on_edge = values < OUTSIDE
        pending = where[on_edge]
        b = -2 - values[on_edge].astype(np.int64)
        start, count = self.cand_start[b], self.cand_start[b + 1] - self.cand_start[b]
        k = 0
        # Round k tests each still-unresolved point against its k-th candidate: smallest code first.
        while len(pending):
            has = count > k
            pending, start, count = pending[has], start[has], count[has]
            if not len(pending):
                break
            candidate = self.cand_ids[start + k]
            hit = shapely.intersects_xy(geometries[candidate], x[pending], y[pending])
            out[pending[hit]] = candidate[hit]
            miss = ~hit
            pending, start, count = pending[miss], start[miss], count[miss]
            k += 1
        return out

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls, geometries: npt.NDArray[np.object_], tree: shapely.STRtree, cells_per_grid_side: float
    ) -> Lattice:
        minx, miny, maxx, maxy = shapely.total_bounds(geometries)
        mean_side = math.sqrt(float(np.sum(shapely.area(geometries))) / len(geometries))
        size = mean_side / cells_per_grid_side
        width, height = max(maxx - minx, size), max(maxy - miny, size)
        if (width / size) * (height / size) > MAX_CELLS:
            size = math.sqrt(width * height / MAX_CELLS)
        cols, rows = math.ceil(width / size) + 1, math.ceil(height / size) + 1
        # Far below any real boundary detail (~1e-4 of a cell) yet far above float rounding of the floor().
        eps = size * 1e-4
        cell_ids, grid_ids = _rasterise_rings(geometries, minx, miny, size, cols, rows, eps)
        boundary = np.zeros(rows * cols, dtype=bool)
        boundary[cell_ids] = True
        cells = _fill_runs(boundary, tree, minx, miny, size, cols, rows)
        # Candidate lists per boundary cell, in position (= code) order, duplicates removed.
        pairs = _sorted_unique(cell_ids * np.int64(len(geometries)) + grid_ids)
        pair_cell, pair_grid = pairs // len(geometries), pairs % len(geometries)
        first = np.flatnonzero(np.concatenate([[True], pair_cell[1:] != pair_cell[:-1]]))
        boundary_cells = pair_cell[first]
        cells[boundary_cells] = (-2 - np.arange(len(boundary_cells))).astype(np.int32)
        cand_start = np.append(first, len(pairs)).astype(np.int64)
        return cls(minx, miny, size, cols, rows, cells, cand_start, pair_grid.astype(np.int32))


def _rasterise_rings(
    geometries: npt.NDArray[np.object_], x0: float, y0: float, size: float, cols: int, rows: int, eps: float
) -> tuple[IntArray, IntArray]:
    """(cell, grid position) for every cell within ``eps`` of a ring segment of that grid."""
    # get_rings skips MultiPolygons, so split them into their polygons first.
    parts, part_owner = shapely.get_parts(geometries, return_index=True)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    ring_owner = part_owner[ring_part]
    coords, coord_ring = shapely.get_coordinates(rings, return_index=True)
    same = coord_ring[1:] == coord_ring[:-1]
    ax, ay = coords[:-1, 0][same], coords[:-1, 1][same]
    bx, by = coords[1:, 0][same], coords[1:, 1][same]
    owner = ring_owner[coord_ring[:-1][same]]
    lo_x, hi_x = np.minimum(ax, bx), np.maximum(ax, bx)
    c0 = np.clip(np.floor((lo_x - eps - x0) / size), 0, cols - 1).astype(np.int64)
    c1 = np.clip(np.floor((hi_x + eps - x0) / size), 0, cols - 1).astype(np.int64)
    # One row per (segment, column slab) it passes through.
    seg = np.repeat(np.arange(len(ax)), c1 - c0 + 1)
    col = c0[seg] + _ramp(c1 - c0 + 1)
    slab_lo = np.maximum(x0 + col * size - eps, lo_x[seg])
    slab_hi = np.minimum(x0 + (col + 1) * size + eps, hi_x[seg])
    dx = bx[seg] - ax[seg]
    steep = np.abs(dx) < 1e-15
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(steep, 0.0, (by[seg] - ay[seg]) / np.where(steep, 1.0, dx))
    y_at_lo = np.where(steep, ay[seg], ay[seg] + (slab_lo - ax[seg]) * slope)
    y_at_hi = np.where(steep, by[seg], ay[seg] + (slab_hi - ax[seg]) * slope)
    lo_y, hi_y = np.minimum(y_at_lo, y_at_hi), np.maximum(y_at_lo, y_at_hi)
    r0 = np.clip(np.floor((lo_y - eps - y0) / size), 0, rows - 1).astype(np.int64)
    r1 = np.clip(np.floor((hi_y + eps - y0) / size), 0, rows - 1).astype(np.int64)
    piece = np.repeat(np.arange(len(seg)), r1 - r0 + 1)
    row = r0[piece] + _ramp(r1 - r0 + 1)
    return row * cols + col[piece], owner[seg[piece]].astype(np.int64)


def _sorted_unique(values: IntArray) -> IntArray:
    # np.unique hashes int64 since numpy 2.3, which is ~8x slower than sorting for millions of pairs.
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if len(values) else values


def _ramp(counts: IntArray) -> IntArray:
    """0..n-1 for each n in ``counts``, concatenated (the offsets inside each repeated block)."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total, dtype=np.int64) - starts


def _fill_runs(
    boundary: npt.NDArray[np.bool_],
    tree: shapely.STRtree,
    x0: float,
    y0: float,
    size: float,
    cols: int,
    rows: int,
) -> npt.NDArray[np.int32]:
    """Owner of every non-boundary cell: cells of one row-run share an owner, so one query per run."""
    free = ~boundary
    index = np.arange(rows * cols, dtype=np.int64)
    previous_free = np.concatenate([[False], free[:-1]]) & (index % cols != 0)
    run_start = np.flatnonzero(free & ~previous_free)
    run_of = np.cumsum(free & ~previous_free) - 1
    cx = x0 + (run_start % cols + 0.5) * size
    cy = y0 + (run_start // cols + 0.5) * size
    point_i, grid_i = tree.query(shapely.points(cx, cy), predicate="intersects")
    owner = np.full(len(run_start), OUTSIDE, dtype=np.int64)
    # Several hits only where grids overlap; the smallest position (= code) wins as everywhere else.
    order = np.lexsort((grid_i, point_i))
    point_i, grid_i = point_i[order], grid_i[order]
    first = np.concatenate([[True], point_i[1:] != point_i[:-1]]) if len(point_i) else np.array([], bool)
    owner[point_i[first]] = grid_i[first]
    cells = np.full(rows * cols, OUTSIDE, dtype=np.int32)
    cells[free] = owner[run_of[free]]
    return cells
