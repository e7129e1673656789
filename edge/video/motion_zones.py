"""Geometry of the motion pre-analysis, computed once per camera: stride, grid, zone masks.

Everything here runs at start-up (or when the configuration changes), never per frame, so it
may allocate freely. Polygons are in unit-square fractions (see edge/config/video.py) and are
rasterised with a vectorised even-odd point-in-polygon test on analysis-pixel centres: no
OpenCV on the box.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.config.video import Motion, MotionZone, Point

BoolArray = npt.NDArray[np.bool_]
F32Array = npt.NDArray[np.float32]
FloatArray = npt.NDArray[np.floating[Any]]

WHOLE_FRAME_ZONE = "frame"  # id of the implicit zone when a camera configures none
ZONE_CELL_COVERAGE = 0.25  # a cell belongs to a zone when this share of its pixels is inside
BASE_SENSITIVITY = 50  # the sensitivity at which pixel_threshold applies unscaled
BASE_CELL_FRACTION = 0.05  # changed share of a cell that makes it "changed" at sensitivity 50


def stride_for(height: int, analysis_rows: int) -> int:
    """Integer decimation step: slicing y[::s, ::s] is free of any resampling library."""
    return max(1, round(height / analysis_rows))


def analysis_shape(frame_shape: tuple[int, int], stride: int) -> tuple[int, int]:
    """Shape of ``y[::stride, ::stride]`` for a full-resolution (h, w) frame."""
    h, w = frame_shape
    return math.ceil(h / stride), math.ceil(w / stride)


def pixel_threshold(base: int, sensitivity: int) -> float:
    """Luma difference that makes a pixel changed: halves at 100, about doubles at 1."""
    return float(base) * 2.0 ** ((BASE_SENSITIVITY - sensitivity) / 50.0)


def cell_fraction(sensitivity: int) -> float:
    """Changed share of a cell's pixels that makes it changed: 5 % at 50, 1.25 % at 100."""
    return BASE_CELL_FRACTION * 4.0 ** ((BASE_SENSITIVITY - sensitivity) / 50.0)


def polygon_mask(points: Sequence[Point], xs: FloatArray, ys: FloatArray) -> BoolArray:
    """Even-odd test of every (xs, ys) point against a polygon given in unit-square fractions."""
    inside = np.zeros(np.broadcast(xs, ys).shape, dtype=bool)
    n = len(points)
    for i in range(n):
        (x1, y1), (x2, y2) = points[i], points[(i - 1) % n]
        if y1 == y2:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (y1 > ys) != (y2 > ys)
        x_at = (x2 - x1) * (ys - y1) / (y2 - y1) + x1
        inside ^= crosses & (xs < x_at)
    return inside


@dataclasses.dataclass(frozen=True)
class ZoneSpec:
    """One detection zone as the detector uses it: which grid cells, which thresholds."""

    id: str
    action: str
    sensitivity: int
    min_cells: int
    persistence_frames: int
    cells: BoolArray  # (grid rows, grid cols)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Everything precomputed for one camera and one analysis shape."""

    stride: int
    shape: tuple[int, int]  # analysis (rows, cols)
    valid: BoolArray  # analysis pixels not under an ignore polygon
    row_sum: F32Array  # (grid rows, rows) 0/1: left factor of the per-cell count product
    col_sum: F32Array  # (cols, grid cols) 0/1: right factor
    valid_per_cell: F32Array  # (grid rows, grid cols) analysable pixels in each cell
    zones: tuple[ZoneSpec, ...]


def whole_frame_zone() -> MotionZone:
    """The implicit zone of a camera that configures none: the whole image, tag only."""
    return MotionZone(id=WHOLE_FRAME_ZONE, polygon=[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)])


def _bands(n: int, parts: int) -> F32Array:
    """(parts, n) 0/1 matrix splitting n indices into ``parts`` nearly equal bands."""
    edges = np.linspace(0, n, parts + 1).round().astype(int)
    idx = np.arange(n)
    return ((idx >= edges[:-1, None]) & (idx < edges[1:, None])).astype(np.float32)


def _zone_cells(inside: BoolArray, layout_rows: F32Array, layout_cols: F32Array) -> BoolArray:
    """Cells with enough of their pixels inside; the best-covered one if the zone is tiny."""
    covered = layout_rows @ inside.astype(np.float32) @ layout_cols
    total = layout_rows.sum(axis=1)[:, None] * layout_cols.sum(axis=0)[None, :]
    share = covered / np.maximum(total, 1.0)
    cells = share >= ZONE_CELL_COVERAGE
    if not cells.any() and share.max() > 0:
        cells = share == share.max()
    return cells


def build_layout(cfg: Motion, frame_shape: tuple[int, int]) -> Layout:
    """Rasterise the camera's zones and ignore polygons onto the analysis frame and grid."""
    stride = stride_for(frame_shape[0], cfg.analysis_rows)
    rows, cols = analysis_shape(frame_shape, stride)
    h, w = frame_shape
    ys = ((np.arange(rows, dtype=np.float64) * stride + 0.5) / h)[:, None]
    xs = ((np.arange(cols, dtype=np.float64) * stride + 0.5) / w)[None, :]
    ignored = np.zeros((rows, cols), dtype=bool)
    for poly in cfg.ignore:
        ignored |= polygon_mask(poly, xs, ys)
    valid = ~ignored
    grid_cols, grid_rows = cfg.grid
    row_sum = _bands(rows, grid_rows)
    col_sum = _bands(cols, grid_cols).T.copy()
    valid_per_cell = row_sum @ valid.astype(np.float32) @ col_sum
    zones = []
    for zone in cfg.zones or [whole_frame_zone()]:
        inside = polygon_mask(zone.polygon, xs, ys) & valid
        zones.append(
            ZoneSpec(
                id=zone.id,
                action=zone.action,
                sensitivity=zone.sensitivity,
                min_cells=zone.min_cells,
                persistence_frames=zone.persistence_frames,
                cells=_zone_cells(inside, row_sum, col_sum),
            )
        )
    return Layout(stride, (rows, cols), valid, row_sum, col_sum, valid_per_cell, tuple(zones))
