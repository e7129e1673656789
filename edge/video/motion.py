"""Motion pre-analysis: which detection zones see something move, from decimated luma only.

Per frame, on an analysis frame of about 176 rows (integer-stride slicing, no resampling):

- the background is a float32 running average, and the difference is taken in float32, so a
  pixel going from 255 to 0 is a change of 255 (uint8 subtraction would wrap around to 1);
- lighting is not motion: when the light changes (lights on, dusk, an infrared camera's
  day/night switch that greys the picture and changes its contrast and gamma), a global
  monotonic tone map from background to frame is fitted on the still part of the scene and
  the background is brought under the new light before the difference (motion_tone); what
  the map does not explain is motion, so detection goes on through the change and an event
  under way stays one event;
- a pixel is changed when |frame - background| exceeds pixel_threshold scaled by the zone's
  sensitivity; a grid cell is changed when its changed share exceeds a share that also
  follows sensitivity (5 % at 50, see motion_zones.cell_fraction); ignore polygons are zero in
  both frame and background so they never change and never count;
- when, even after the tone map, at least lighting_fraction of the analysable frame changed
  (the camera was moved, a light lit only part of the view), the background is replaced by
  the frame and relearns fast (HOLDOFF_RATE) for lighting_holdoff_s; meanwhile no new event
  starts and events under way are neither extended nor ended (they go on, or end at their
  last motion, once the hold-off is over);
- a zone is in motion after persistence_frames consecutive frames with at least min_cells
  changed cells; it ends once it has been quiet for persistence_frames frames *and*
  END_QUIET_S seconds of frame time, so an event does not flicker at 25 fps nor linger at 2 fps;
- pixels that are changed learn at MOTION_RATE_FACTOR of the learning rate: a person who
  stops is absorbed slowly (time constant 1 / (0.1 x 0.02) = 500 frames, about a minute at
  10 fps) rather than at once, yet a parked car still becomes background eventually.

Per-frame work is a handful of vectorised passes over preallocated buffers plus two small
matrix products that count changed pixels per cell; the geometry is built once (motion_zones).
The frame-wide changed share and the tone map are global, so they are measured on 1/16 of the
pixels, and the background learns every LEARN_EVERY-th frame at LEARN_EVERY times the rate (the
same time constant, a quarter of the cost). bench/motion.py compares the cost with Frigate's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.config.video import Motion
from edge.errors import EdgeError
from edge.video.motion_tone import ToneMap, ToneSampler
from edge.video.motion_zones import (
    BoolArray,
    F32Array,
    Layout,
    ZoneSpec,
    build_layout,
    cell_fraction,
    pixel_threshold,
)

log = logging.getLogger(__name__)

HOLDOFF_RATE = 0.25  # background learning rate while new detections are held off
MOTION_RATE_FACTOR = 0.1  # changed pixels learn at this fraction of the learning rate
END_QUIET_S = 1.0  # an event ends after this much quiet frame time (and persistence frames)
LEARN_EVERY = 4  # the background learns every 4th frame at 4x the rate: same time constant
MAX_STEP_RATE = 0.1  # ... unless that step would exceed this; then it learns every frame
# A tone map is applied as it is when under TONE_SMALL_CHANGE of the frame changed (it follows
# a drift); over that, it must at least halve the change of the still scene it was fitted on,
# or the view itself changed (the camera was knocked) and the map would only scramble the
# background. A map that explains TONE_MIN_EXPLAINED of the frame is reported as lighting ...
TONE_SMALL_CHANGE = 0.1
TONE_MIN_EXPLAINED = 0.05
LIGHTING_REPORT_GAP_S = 1.0  # ... once: not again within this time (a change over frames)


class MotionInputError(EdgeError, ValueError):
    """A frame handed to the motion detector does not fit the camera it was built for."""


@dataclasses.dataclass(frozen=True)
class MotionEvent:
    """Motion in one zone; ``end_s`` is None while it lasts. Cells are (column, row).

    ``last_s`` / ``last_frame``: the last frame with motion so far (the end once it ended).
    """

    zone: str
    action: str
    start_s: float
    end_s: float | None
    start_frame: int
    end_frame: int | None
    peak_cells: int
    cells: list[tuple[int, int]]
    last_s: float
    last_frame: int


class _Track:
    """Persistence of one zone: counts consecutive moving frames, then quiet ones."""

    def __init__(self, spec: ZoneSpec) -> None:
        self.spec = spec
        self.run = 0
        self.quiet = 0
        self.start = (0, 0.0)
        self.last = (0, 0.0)
        self.peak = 0
        self.cells = np.zeros_like(spec.cells)
        self.open = False

    def step(self, moving: BoolArray | None, frame: int, t_s: float) -> MotionEvent | None:
        """Advance one frame; ``moving`` is the zone's changed cells, None when too few."""
        if moving is not None:
            if self.run == 0 and not self.open:
                self.start, self.peak = (frame, t_s), 0
                self.cells[:] = False
            self.run += 1
            self.quiet = 0
            self.last = (frame, t_s)
            self.cells |= moving
            self.peak = max(self.peak, int(np.count_nonzero(moving)))
            if not self.open and self.run >= self.spec.persistence_frames:
                self.open = True
                return self.event(ended=False)
            return None
        self.run = 0
        if not self.open:
            return None
        self.quiet += 1
        if self.quiet >= self.spec.persistence_frames and t_s - self.last[1] >= END_QUIET_S:
            return self.close()
        return None

    def hold(self) -> None:
        """A frame the detector cannot judge: nothing builds up, an open event stays open."""
        if not self.open:
            self.run = 0

    def close(self) -> MotionEvent:
        self.open, self.run, self.quiet = False, 0, 0
        return self.event(ended=True)

    def event(self, *, ended: bool) -> MotionEvent:
        rows, cols = np.nonzero(self.cells)
        return MotionEvent(
            zone=self.spec.id,
            action=self.spec.action,
            start_s=self.start[1],
            end_s=self.last[1] if ended else None,
            start_frame=self.start[0],
            end_frame=self.last[0] if ended else None,
            peak_cells=self.peak,
            cells=[(int(c), int(r)) for r, c in zip(rows, cols, strict=True)],
            last_s=self.last[1],
            last_frame=self.last[0],
        )


@dataclasses.dataclass
class _Group:
    """Zones sharing one sensitivity share one changed-pixel map and one cell count."""

    threshold: float
    min_changed: F32Array  # per cell; +inf where a cell has nothing to analyse
    zones: list[int]


def _groups(layout: Layout, base_threshold: int) -> list[_Group]:
    """Sensitivity groups, least sensitive first so the last map is the most inclusive."""
    by_sens: dict[int, list[int]] = {}
    for i, zone in enumerate(layout.zones):
        by_sens.setdefault(zone.sensitivity, []).append(i)
    groups = []
    for sens in sorted(by_sens):
        need = np.maximum(layout.valid_per_cell * cell_fraction(sens), 1.0).astype(np.float32)
        need[layout.valid_per_cell == 0] = np.inf
        groups.append(_Group(pixel_threshold(base_threshold, sens), need, by_sens[sens]))
    return groups


@dataclasses.dataclass
class _Light:
    """What the light did on this frame, for the decision and for ``last_stats``."""

    raw: float  # share of the frame changed before the tone map
    residual: float  # ... and after it
    tone: ToneMap | None
    relearn: bool = False
    reported: bool = False


class MotionDetector:
    """Feeds luma frames of one camera; returns motion events as they start and end."""

    def __init__(self, cfg: Motion, frame_shape: tuple[int, int]) -> None:
        self._cfg = cfg
        self._full_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self._layout = layout = build_layout(cfg, self._full_shape)
        self._groups = _groups(layout, cfg.pixel_threshold)
        self._tracks = [_Track(z) for z in layout.zones]
        self._masked = not bool(layout.valid.all())
        self._invalid = ~layout.valid
        self._u8 = np.zeros(layout.shape, np.uint8)
        self._rows = np.zeros((layout.shape[0], self._full_shape[1]), np.uint8)
        self._f, self._bg, self._d, self._a, self._chg, self._w = (
            np.zeros(layout.shape, np.float32) for _ in range(6)
        )
        self._tone = ToneSampler(layout, self._f, self._bg, self._chg)
        self._learn_every = LEARN_EVERY if cfg.learning_rate * LEARN_EVERY <= MAX_STEP_RATE else 1
        self._frame = -1
        self._holdoff_until = -math.inf
        self._reported_at = -math.inf
        self.last_stats: dict[str, Any] = {}

    @property
    def layout(self) -> Layout:
        return self._layout

    @property
    def active(self) -> dict[str, MotionEvent]:
        """Zones in motion now, with what they have seen so far."""
        return {t.spec.id: t.event(ended=False) for t in self._tracks if t.open}

    def feed(self, y: npt.NDArray[np.uint8], t_s: float) -> list[MotionEvent]:
        """Analyse one frame (full resolution or already decimated); events that changed."""
        self._load(y)
        self._frame += 1
        if self._frame == 0:
            np.copyto(self._bg, self._f)
            self._stats(t_s, _Light(0.0, 0.0, None), None)
            return []
        light = self._light(t_s)
        if light.relearn or t_s < self._holdoff_until:
            if not light.relearn:
                np.subtract(self._f, self._bg, out=self._d)
                self._learn(HOLDOFF_RATE, None)
            self._stats(t_s, light, None)
            for track in self._tracks:
                track.hold()
            return []
        np.subtract(self._f, self._bg, out=self._d)
        np.abs(self._d, out=self._a)
        per_zone, counts = self._zone_cells()
        if self._frame % self._learn_every == 0:
            self._learn(self._cfg.learning_rate * self._learn_every, self._chg)
        self._stats(t_s, light, counts)
        return self._step_tracks(per_zone, t_s)

    def horizon_s(self, t_s: float) -> float:
        """Frame time that no event still to be reported can precede (``t_s``, the current
        frame's, when none): one yet to start begins at its first frame with motion, one yet
        to end ends at its last. Output before it can be printed in time order."""
        times = [t_s]
        for track in self._tracks:
            if track.open:
                times.append(track.last[1])
            elif track.run:
                times.append(track.start[1])
        return min(times)

    def flush(self, t_s: float) -> list[MotionEvent]:
        """End every open event (camera stopping) at its last moving frame."""
        del t_s  # events end at their last frame with motion, which is already known
        return [t.close() for t in self._tracks if t.open]

    def _light(self, t_s: float) -> _Light:
        """Fit the tone map and bring the background under the frame's light; relearn the
        background from the frame when even that leaves lighting_fraction changed."""
        threshold = self._cfg.pixel_threshold
        raw, tone = self._tone.measure(threshold)
        light = _Light(raw, raw, tone)
        if tone is not None:
            check = self._tone.check(tone, threshold)
            if raw >= TONE_SMALL_CHANGE and check.still_after > check.still_before / 2:
                light.tone = None  # no change of light does that: the view itself changed
            else:
                light.residual = check.residual
                self._bg[...] = tone(self._bg)
                if self._masked:
                    self._bg[self._invalid] = 0.0
        if light.residual >= self._cfg.lighting_fraction:
            light.relearn = light.reported = True
            np.copyto(self._bg, self._f)
            self._holdoff_until = t_s + self._cfg.lighting_holdoff_s
        elif light.tone is not None and raw - light.residual >= TONE_MIN_EXPLAINED:
            light.reported = t_s - self._reported_at >= LIGHTING_REPORT_GAP_S
            self._reported_at = t_s
        if light.reported:
            log.debug(
                "lighting change at %.2f s: %.0f %% of the frame changed, %.0f %% after the "
                "tone map%s",
                t_s,
                raw * 100,
                light.residual * 100,
                ", background relearnt" if light.relearn else "",
            )
        return light

    def _load(self, y: npt.NDArray[np.uint8]) -> None:
        if y.dtype != np.uint8 or y.ndim != 2:
            raise MotionInputError(
                f"motion needs a 2-D uint8 luma plane, got {y.dtype} with shape {y.shape}"
            )
        if y.shape == self._full_shape:
            # Whole rows first (streams from memory), then every s-th byte from cache: about
            # a third faster than one 2-D strided gather on a frame that is not in cache.
            s = self._layout.stride
            np.copyto(self._rows, y[::s])
            np.copyto(self._u8, self._rows[:, ::s])
        elif y.shape == self._layout.shape:
            np.copyto(self._u8, y)
        else:
            raise MotionInputError(
                f"frame shape {y.shape} fits neither the camera's {self._full_shape} nor its "
                f"analysis shape {self._layout.shape}: build one detector per resolution"
            )
        if self._masked:
            np.copyto(self._f, self._u8, where=self._layout.valid)  # ignored pixels stay 0
        else:
            np.copyto(self._f, self._u8)

    def _zone_cells(self) -> tuple[list[BoolArray | None], list[int]]:
        """Changed cells of each zone (None where fewer than its min_cells) and their counts."""
        per_zone: list[BoolArray | None] = [None] * len(self._tracks)
        counts = [0] * len(self._tracks)
        lay = self._layout
        for group in self._groups:
            np.greater(self._a, group.threshold, out=self._chg)
            changed = lay.row_sum @ self._chg @ lay.col_sum >= group.min_changed
            for i in group.zones:
                spec = self._tracks[i].spec
                mine = changed & spec.cells
                counts[i] = n = int(np.count_nonzero(mine))
                if n >= spec.min_cells:
                    per_zone[i] = mine
        return per_zone, counts

    def _learn(self, rate: float, moving: F32Array | None) -> None:
        """bg += rate x (f - bg) from ``_d`` = f - bg, slower where ``moving`` (0/1) is 1."""
        if moving is None:
            self._d *= rate
        else:
            np.multiply(moving, rate * (MOTION_RATE_FACTOR - 1.0), out=self._w)
            self._w += rate
            self._d *= self._w
        self._bg += self._d

    def _step_tracks(self, per_zone: list[BoolArray | None], t_s: float) -> list[MotionEvent]:
        events = []
        for i, track in enumerate(self._tracks):
            event = track.step(per_zone[i], self._frame, t_s)
            if event is not None:
                events.append(event)
        return events

    def _stats(self, t_s: float, light: _Light, counts: list[int] | None) -> None:
        """What the last frame looked like, for `edge motion --verbose` and tuning."""
        self.last_stats = {
            "frame": self._frame,
            "t_s": t_s,
            "changed_fraction": light.raw,
            "residual_fraction": light.residual,
            "tone_shift": 0.0 if light.tone is None else light.tone.shift,
            "lighting": light.reported,
            "relearnt": light.relearn,
            "holdoff": t_s < self._holdoff_until,
            "cells_changed": {
                t.spec.id: 0 if counts is None else counts[i] for i, t in enumerate(self._tracks)
            },
        }
