"""Privacy masks: polygons of the unit square rasterised to pixels and burned into images.

A mask is burned into the picture *before* it is encoded, so no recorded or streamed byte
ever holds the hidden area (CNIL / Code de la sécurité intérieure: private windows, a
neighbour's garden). Only sources that encode themselves can do this (synthetic, V4L2,
picamera2); a passed-through RTSP stream must be masked in the camera.

Rasterisation is exact enough for privacy and cheap: a pixel is hidden when its centre is
inside a polygon (even-odd rule), and a chroma sample when any of the luma pixels it covers
is. Masks are computed once per (polygons, size) and cached.
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt

from edge.config.video import Point

Mask = npt.NDArray[np.bool_]
Plane = npt.NDArray[np.uint8]

BLACK_Y = 16  # video-range black; 0 would be "blacker than black" to a limited-range player
NEUTRAL_C = 128  # chroma of a grey (so of black)


def polygon_mask(polygon: list[Point], width: int, height: int) -> Mask:
    """Pixels (rows x columns) whose centre lies inside ``polygon`` (even-odd rule)."""
    pts = np.asarray(polygon, dtype=np.float64) * (width, height)
    x0, y0 = pts[:, 0], pts[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    cy = np.arange(height, dtype=np.float64)[:, None] + 0.5  # (H, 1) row centres
    crosses = (y0 <= cy) != (y1 <= cy)  # (H, E): the edge spans this row centre
    with np.errstate(divide="ignore", invalid="ignore"):
        xs = x0 + (cy - y0) * (x1 - x0) / (y1 - y0)
    xs = np.where(crosses, xs, np.inf)  # (H, E) crossing abscissas, inf when none
    cx = np.arange(width, dtype=np.float64) + 0.5
    # Inside when an odd number of crossings lie left of the pixel centre.
    left = (xs[:, :, None] < cx[None, None, :]).sum(axis=1)
    return (left % 2) == 1


@functools.lru_cache(maxsize=32)
def _cached_mask(polygons: tuple[tuple[Point, ...], ...], width: int, height: int) -> Mask:
    mask = np.zeros((height, width), dtype=np.bool_)
    for poly in polygons:
        mask |= polygon_mask(list(poly), width, height)
    mask.setflags(write=False)
    return mask


def privacy_mask(polygons: list[list[Point]], width: int, height: int) -> Mask | None:
    """The union of ``polygons`` at ``width`` x ``height``; None when nothing is masked."""
    if not polygons:
        return None
    key = tuple(tuple((float(x), float(y)) for x, y in poly) for poly in polygons)
    return _cached_mask(key, width, height)


def chroma_mask(mask: Mask) -> Mask:
    """A 4:2:0 chroma sample is hidden when any luma pixel of its 2x2 block is."""
    h, w = mask.shape
    padded = np.zeros((h + h % 2, w + w % 2), dtype=np.bool_)
    padded[:h, :w] = mask
    return padded[0::2, 0::2] | padded[1::2, 0::2] | padded[0::2, 1::2] | padded[1::2, 1::2]


def i420_planes(
    buf: Plane, width: int, height: int, stride: int | None = None
) -> tuple[Plane, Plane, Plane]:
    """Views (no copy) of the Y, U and V planes of a planar YUV 4:2:0 buffer.

    ``buf`` is laid out as libcamera / picamera2 "YUV420" and FFmpeg "yuv420p" arrays are: the
    Y plane with rows of ``stride`` bytes, then U and V with rows of ``stride // 2``. Shapes
    (h*3/2, stride) or flat are both accepted; it must be C-contiguous so the views alias it.
    """
    stride = width if stride is None else stride
    if not buf.flags.c_contiguous:
        raise ValueError("the YUV420 buffer is not contiguous: views would not alias it")
    flat = buf.reshape(-1)
    cw, ch, cs = (width + 1) // 2, (height + 1) // 2, stride // 2
    y_end = stride * height
    u_end = y_end + cs * ch
    y = flat[:y_end].reshape(height, stride)[:, :width]
    u = flat[y_end:u_end].reshape(ch, cs)[:, :cw]
    v = flat[u_end : u_end + cs * ch].reshape(ch, cs)[:, :cw]
    return y, u, v


def burn_i420(
    buf: Plane, mask: Mask | None, width: int, height: int, stride: int | None = None
) -> None:
    """Paint the masked area black, in place, in a planar YUV 4:2:0 buffer."""
    if mask is None:
        return
    if mask.shape != (height, width):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, image is {width}x{height}")
    y, u, v = i420_planes(buf, width, height, stride)
    y[mask] = BLACK_Y
    cmask = chroma_mask(mask)
    u[cmask] = NEUTRAL_C
    v[cmask] = NEUTRAL_C
