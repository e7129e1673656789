"""Lighting is not motion: a global tone map between the background and each new frame.

A change of light changes the *mapping* from scene to luma for the whole picture at once: lights
switched on brighten everything (gain and offset), dusk fades it, and an infrared camera's
day/night switch turns the picture grey and changes its contrast and gamma while its mean
brightness barely moves, so dark areas get lighter and bright ones darker. A single gain does
not capture the last one, and it leaves the frame-wide changed share well under any "lighting"
threshold (about 40 % of the cells change) while every changed cell looks like motion.

What stays true in all of them is that the map is global and monotonic: two background pixels
that had the same luma before still have (about) the same luma after, and a brighter one stays
at least as bright. So the map is fitted, not assumed:

- the background's luma range is cut into TONE_BINS bands; in each band, the new luma of the
  pixels that were there is summarised by the *median* of (frame - background), which ignores
  anything that covers less than half of the band (a person walking is a small minority);
- pixels that were changed in the previous frame (the moving minority being tracked) and
  ignored pixels do not vote at all, so a step during activity is fitted on the still scene;
- when fewer than TONE_MIN_MOVED bands moved by TONE_DEADBAND levels, the light did not
  change and nothing else is done (a per-band count of residuals beyond the dead band tells
  that cheaply; the medians are only computed when it says the light may have changed);
- otherwise the band medians, made non-decreasing, are the knots of a piecewise-linear map,
  extended with its mean slope past the outer knots; the background is passed through the
  map in place, and motion is judged on what the map does not explain (the residual):
  someone walking through an IR switch is still seen, in the same event.

The fit runs on every frame, so a fade is followed in steps of a few levels, long before any
pixel crosses a threshold; a fit that waited for changed pixels would find the brightest ones
(which move first) already changed, hence not voting, hence never mapped.

Alternatives weighed: rank or histogram matching (normalise both images by their luma
distribution) needs no pairing, but the moving minority shifts the histogram itself and a
sort per frame costs more than the whole detector; an affine fit (gain, offset) misses the
gamma part of an IR switch. Everything here uses every SAMPLE_STEP-th analysis pixel each
way: global statistics, estimated well by 1/16 of the pixels at 1/16 of the cost.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from edge.video.motion_zones import BoolArray, F32Array, Layout

I64Array = npt.NDArray[np.int64]

SAMPLE_STEP = 4  # the global statistics use every 4th analysis pixel each way
TONE_BINS = 16  # bands of background luma, each 16 levels wide
TONE_DEADBAND = 4.0  # knots moving less than this (luma levels) do not count as moved ...
TONE_MIN_MOVED = 2  # ... and with fewer moved knots than this, the light did not change
TONE_MIN_VOTES = 12  # a band needs this many voting pixels to become a knot
TONE_MIN_VOTING = 0.25  # ... and the voting pixels this share of the analysable sample
RESIDUAL_STEP = 2.0  # medians come from a histogram of residuals in steps of 2 levels
_ZERO = 128  # its column of a zero residual: -255..255 fall in columns 0..256
_COLUMNS = 257
# The cheap check counts residuals beyond this: a column median of TONE_DEADBAND may come
# from residuals RESIDUAL_STEP / 2 short of it, and the check must never hide a moved band.
_CHECK_LEVEL = TONE_DEADBAND - RESIDUAL_STEP / 2


@dataclasses.dataclass(frozen=True)
class ToneMap:
    """A monotonic luma map fitted from background to frame; calling it brings background
    values under the new light. ``shift`` is its largest move at a knot, in luma levels."""

    xs: F32Array
    ys: F32Array
    shift: float

    def __call__(self, values: F32Array) -> F32Array:
        """The mapped values (a new array), clipped to 0..255."""
        mapped = np.interp(values, self.xs, self.ys).astype(np.float32)
        np.clip(mapped, 0.0, 255.0, out=mapped)
        return mapped


@dataclasses.dataclass(frozen=True)
class ToneCheck:
    """Changed shares once the background is mapped: of the whole sample (``residual``) and,
    before and after, of its still part (the pixels that voted for the map). A lighting
    change leaves the still part unchanged after the map; a moved camera does not."""

    residual: float
    still_before: float
    still_after: float


class ToneSampler:
    """Frame-wide share of changed pixels and the tone map, read from the detector's own
    frame, background and changed-pixel buffers (views; those buffers are never replaced)."""

    def __init__(self, layout: Layout, f: F32Array, bg: F32Array, changed: F32Array) -> None:
        step = SAMPLE_STEP
        self._views = (f[::step, ::step], bg[::step, ::step], changed[::step, ::step])
        valid = layout.valid[::step, ::step]
        self._invalid: BoolArray = ~valid
        self._masked = bool(self._invalid.any())
        self._invalid_band = np.where(self._invalid, np.float32(TONE_BINS), np.float32(0))
        self.valid_count = max(1, int(np.count_nonzero(valid)))
        shape = valid.shape
        self._f, self._bg, self._r, self._t = (np.zeros(shape, np.float32) for _ in range(4))
        self._band, self._key = (np.zeros(shape, np.int32) for _ in range(2))
        self._up, self._down = (np.zeros(shape, np.bool_) for _ in range(2))
        self._min_voting = max(TONE_MIN_VOTES, TONE_MIN_VOTING * self.valid_count)

    def measure(self, threshold: float) -> tuple[float, ToneMap | None]:
        """(share of the analysable frame changed as it is, the tone map if the light changed).

        Reads the current frame and background and the previous frame's changed pixels.
        """
        f_view, bg_view, changed = self._views
        np.copyto(self._f, f_view)
        np.copyto(self._bg, bg_view)
        r, t = self._r, self._t
        np.subtract(self._f, self._bg, out=r)
        np.abs(r, out=t)
        raw = float(np.count_nonzero(t > threshold)) / self.valid_count
        # Band of each voting pixel, 0..TONE_BINS-1; changed or ignored: the extra band.
        np.multiply(changed, TONE_BINS, out=t)
        if self._masked:
            np.maximum(t, self._invalid_band, out=t)
        t += self._bg * (TONE_BINS / 256.0)
        np.minimum(t, TONE_BINS, out=t)
        np.copyto(self._band, t, casting="unsafe")  # floor, all values being >= 0
        if not self._may_have_moved(r):
            return raw, None
        return raw, self._fit(r)

    def check(self, tone: ToneMap, threshold: float) -> ToneCheck:
        """How much of the sample ``tone`` explains: all of it, and the still part."""
        mapped = tone(self._bg)
        if self._masked:
            mapped[self._invalid] = 0.0  # ignored pixels are 0 in the frame as well
        np.subtract(self._f, mapped, out=mapped)
        after = np.abs(mapped) > threshold
        still = self._band < TONE_BINS
        np.subtract(self._f, self._bg, out=mapped)
        before = np.abs(mapped) > threshold
        voters = max(1, int(np.count_nonzero(still)))
        return ToneCheck(
            residual=float(np.count_nonzero(after)) / self.valid_count,
            still_before=float(np.count_nonzero(before & still)) / voters,
            still_after=float(np.count_nonzero(after & still)) / voters,
        )

    def _may_have_moved(self, r: F32Array) -> bool:
        """Per band, are more than half of the votes beyond the dead band one way? (3 counts
        per band from one bincount: a fraction of the cost of the medians.)"""
        key, up, down = self._key, self._up, self._down
        np.multiply(self._band, 3, out=key)
        key += 1
        np.greater_equal(r, _CHECK_LEVEL, out=up)
        np.less_equal(r, -_CHECK_LEVEL, out=down)
        key += up
        key -= down
        counts = np.bincount(key.ravel(), minlength=3 * (TONE_BINS + 1))[: 3 * TONE_BINS]
        down_n, _, up_n = counts.reshape(TONE_BINS, 3).T
        votes = counts.reshape(TONE_BINS, 3).sum(axis=1)
        moved = (2 * np.maximum(up_n, down_n) > votes) & (votes >= TONE_MIN_VOTES)
        return int(np.count_nonzero(moved)) >= TONE_MIN_MOVED

    def _fit(self, r: F32Array) -> ToneMap | None:
        """Band medians of frame - background over the voting pixels, from one histogram of
        (band, residual in steps of RESIDUAL_STEP levels)."""
        key, t = self._key, self._t
        np.multiply(self._band, _COLUMNS, out=key)
        np.multiply(r, 1.0 / RESIDUAL_STEP, out=t)
        t += _ZERO + 0.5  # rounds to the nearest column once truncated
        key += t.astype(np.int32)
        hist = np.bincount(key.ravel(), minlength=(TONE_BINS + 1) * _COLUMNS)
        cum = np.cumsum(hist[: TONE_BINS * _COLUMNS].reshape(TONE_BINS, _COLUMNS), axis=1)
        votes = cum[:, -1]
        knots = votes >= TONE_MIN_VOTES
        if votes[knots].sum() < self._min_voting:
            return None  # too little still scene to tell light from motion
        column = (cum < ((votes + 1) // 2)[:, None]).sum(axis=1)
        move = ((column[knots] - _ZERO) * RESIDUAL_STEP).astype(np.float32)
        moved = np.abs(move)
        if np.count_nonzero(moved >= TONE_DEADBAND) < TONE_MIN_MOVED:
            return None
        return self._map(knots, votes, move, float(moved.max()))

    def _map(self, knots: BoolArray, votes: I64Array, move: F32Array, shift: float) -> ToneMap:
        """Knots at each band's mean background luma, moved by the band's median residual."""
        sums = np.bincount(self._band.ravel(), weights=self._bg.ravel(), minlength=TONE_BINS + 1)
        xs = (sums[:TONE_BINS][knots] / votes[knots]).astype(np.float32)
        ys = np.maximum.accumulate(xs + move)
        # Past the outer knots the map goes on with its mean slope (a gain or a contrast change
        # reaches the darkest and brightest pixels too); end points just outside 0..255.
        slope = 1.0
        if len(xs) > 1 and xs[-1] > xs[0]:
            slope = min(max(float((ys[-1] - ys[0]) / (xs[-1] - xs[0])), 0.0), 4.0)
        first = ys[0] - slope * (xs[0] + 1.0)
        last = ys[-1] + slope * (256.0 - xs[-1])
        return ToneMap(
            np.concatenate([[-1.0], xs, [256.0]]).astype(np.float32),
            np.concatenate([[first], ys, [last]]).astype(np.float32),
            shift,
        )
