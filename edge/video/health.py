"""Camera health: is the camera still watching what it should? (tamper / fault supervision)

A :class:`HealthMonitor` per camera is fed the analysis luma frames and reports each fault
once when it appears and once when it clears (:class:`HealthChange`):

- ``signal_loss``: no frame for ``signal_loss_s`` (checked by :meth:`HealthMonitor.tick`,
  since a lost camera sends nothing to check);
- ``frozen``: consecutive frames identical for ``frozen_s`` (a stuck encoder or ISP);
- ``covered``: mean luma below ``dark_level`` (a hand, a bag, paint, a dead IR lamp);
- ``defocus``: high-frequency energy below ``defocus_ratio`` x the reference;
- ``scene_change``: similarity to the reference view below ``scene_change`` (turned away,
  displaced, something large put in front).

Every measure is chosen to be blind to what must not raise a fault. Lighting (lights on,
dusk, the IR cut-over) changes gain and offset: sharpness is the mean absolute Laplacian
*divided by the contrast* (standard deviation) and similarity is a *normalised*
correlation, both invariant to gain and offset. Sensor noise would dominate a Laplacian, so
it is taken on a 2x2-binned frame. A person walking by covers a small part of the view and
passes: similarity drops a little, briefly, and every fault needs its condition to hold for
a few seconds (``RAISE_S``) before it is raised, and to be gone as long before it clears.

The reference (view and sharpness) is learned from the first ``LEARN_S`` seconds of
healthy video, follows slow drift while the camera is healthy and the view clearly the same,
and is relearned on request (:meth:`HealthMonitor.relearn`, after an installer re-aims).
Darkness suspends the other checks: a covered camera is reported as covered only.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from edge.config.video import Health
from edge.video.frames import LumaFrame

SIGNAL_LOSS = "signal_loss"
FROZEN = "frozen"
COVERED = "covered"
DEFOCUS = "defocus"
SCENE_CHANGE = "scene_change"
FAULTS = (SIGNAL_LOSS, FROZEN, COVERED, DEFOCUS, SCENE_CHANGE)

EVAL_S = 0.5  # the picture checks run twice a second; frozen looks at every frame
LEARN_S = 3.0  # healthy video needed to learn the reference
RAISE_S = {COVERED: 2.0, DEFOCUS: 4.0, SCENE_CHANGE: 4.0}  # and as long to clear
CELL = 8  # similarity grid: means of CELL x CELL pixels (about 22 x 30 cells)
SAME_PIXEL = 2  # luma steps a pixel may differ by in "identical" frames (decoder rounding)
SAME_FRACTION = 0.001  # fraction of pixels allowed to differ more in "identical" frames
DRIFT = 0.002  # reference update per check while healthy (time constant ~4 min)
DRIFT_MARGIN = 0.25  # ... only when similarity is this far above the threshold

Plane = npt.NDArray[np.uint8]
Floats = npt.NDArray[np.float32]


@dataclasses.dataclass(frozen=True)
class HealthChange:
    """``fault`` became active or cleared; ``value`` is the measure that decided it."""

    camera: str
    fault: str
    active: bool
    value: float


def sharpness(y: Plane) -> float:
    """Contrast-normalised high-frequency energy: mean |Laplacian| / std, on 2x2 bins."""
    h, w = y.shape[0] // 2 * 2, y.shape[1] // 2 * 2
    f = y[:h, :w].astype(np.float32)
    b = (f[0::2, 0::2] + f[1::2, 0::2] + f[0::2, 1::2] + f[1::2, 1::2]) * 0.25
    if b.shape[0] < 3 or b.shape[1] < 3:
        return 0.0
    lap = 4 * b[1:-1, 1:-1] - b[:-2, 1:-1] - b[2:, 1:-1] - b[1:-1, :-2] - b[1:-1, 2:]
    return float(np.abs(lap).mean() / (b.std() + 1.0))


def view_signature(y: Plane) -> Floats:
    """Zero-mean, unit-norm grid of cell means: dot products are normalised correlations."""
    h, w = y.shape[0] // CELL * CELL, y.shape[1] // CELL * CELL
    g = y[:h, :w].astype(np.float32).reshape(h // CELL, CELL, w // CELL, CELL).mean(axis=(1, 3))
    g -= g.mean()
    norm = float(np.linalg.norm(g))
    return g / norm if norm > 1e-3 else g


def similarity(a: Floats, b: Floats) -> float:
    return float((a * b).sum()) if a.shape == b.shape else 0.0


def identical(a: Plane, b: Plane) -> bool:
    if a.shape != b.shape:
        return False
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16)) > SAME_PIXEL
    return int(np.count_nonzero(diff)) <= a.size * SAME_FRACTION


@dataclasses.dataclass
class _Debounce:
    """A condition must hold (or be gone) ``hold`` seconds to change the fault's state."""

    hold: float
    active: bool = False
    since: float | None = None  # when the condition started disagreeing with ``active``

    def update(self, condition: bool, t: float) -> bool:
        """True when the fault's state flips now."""
        if condition == self.active:
            self.since = None
            return False
        if self.since is None:
            self.since = t
        if t - self.since < self.hold:
            return False
        self.active, self.since = condition, None
        return True


class HealthMonitor:
    """Health checks of one camera; ``feed`` each analysis frame, ``tick`` every second."""

    def __init__(self, cfg: Health, fps: float, camera: str = "") -> None:
        self.cfg = cfg
        self.camera = camera
        self.fps = fps
        self.loss_s = max(cfg.signal_loss_s, 3.0 / fps)  # never between two slow frames
        self.active: set[str] = set()
        self._last_t: float | None = None
        self._prev: Plane | None = None
        self._prev_t = 0.0
        self._frozen_since: float | None = None
        self._next_eval = float("-inf")
        self._checks = {k: _Debounce(v) for k, v in RAISE_S.items()}
        self.relearn()

    @property
    def learned(self) -> bool:
        return self._ref_view is not None

    def relearn(self) -> list[HealthChange]:
        """Forget the reference; it is learned again from the next healthy seconds."""
        self._ref_view: Floats | None = None
        self._ref_sharp = 0.0
        self._samples: list[tuple[Floats, float]] = []
        return [self._change(f, False, 0.0) for f in (DEFOCUS, SCENE_CHANGE) if self._clear(f)]

    def tick(self, now: float) -> list[HealthChange]:
        """Raise ``signal_loss`` when no frame came for ``signal_loss_s``."""
        if self._last_t is None or SIGNAL_LOSS in self.active:
            return []
        silent = now - self._last_t
        if silent < self.loss_s:
            return []
        self.active.add(SIGNAL_LOSS)
        return [self._change(SIGNAL_LOSS, True, silent)]

    def feed(self, frame: LumaFrame, t: float) -> list[HealthChange]:
        """Check one frame received at ``t`` seconds, on the same clock as :meth:`tick`.

        The service passes ``time.monotonic()`` to both (frame timestamps stop with the camera,
        so they cannot measure a loss); a test on a scene's own clock may use frame.seconds.
        """
        self.camera = self.camera or frame.camera
        changes = self.tick(t)
        if SIGNAL_LOSS in self.active:
            self.active.discard(SIGNAL_LOSS)
            changes.append(self._change(SIGNAL_LOSS, False, t - (self._last_t or t)))
        self._last_t = t
        y = frame.y
        mean = float(y.mean())
        dark = mean < self.cfg.dark_level
        changes += self._frozen(y, t, dark)
        if t >= self._next_eval:
            self._next_eval = t + EVAL_S
            changes += self._picture(y, t, mean, dark)
        return changes

    # -- checks ------------------------------------------------------------------------------
    def _frozen(self, y: Plane, t: float, dark: bool) -> list[HealthChange]:
        same = not dark and self._prev is not None and identical(self._prev, y)
        prev_t, self._prev, self._prev_t = self._prev_t, y, t
        if not same:
            self._frozen_since = None
            if self._clear(FROZEN):
                return [self._change(FROZEN, False, 0.0)]
            return []
        if self._frozen_since is None:
            self._frozen_since = prev_t  # the picture has not changed since that frame
        still = t - self._frozen_since
        if still >= self.cfg.frozen_s and FROZEN not in self.active:
            self.active.add(FROZEN)
            return [self._change(FROZEN, True, still)]
        return []

    def _picture(self, y: Plane, t: float, mean: float, dark: bool) -> list[HealthChange]:
        changes = self._debounced(COVERED, dark, t, mean)
        if dark or COVERED in self.active or FROZEN in self.active:
            return changes  # nothing to judge in a black or stuck picture
        view, sharp = view_signature(y), sharpness(y)
        if self._ref_view is None:
            self._learn(view, sharp)
            return changes
        ratio = sharp / self._ref_sharp if self._ref_sharp > 0 else 1.0
        sim = similarity(view, self._ref_view)
        changes += self._debounced(DEFOCUS, ratio < self.cfg.defocus_ratio, t, ratio)
        changes += self._debounced(SCENE_CHANGE, sim < self.cfg.scene_change, t, sim)
        if not self.active and sim > self.cfg.scene_change + DRIFT_MARGIN:
            ref = self._ref_view * (1 - DRIFT) + view * DRIFT
            self._ref_view = (ref / max(float(np.linalg.norm(ref)), 1e-6)).astype(np.float32)
        return changes

    def _learn(self, view: Floats, sharp: float) -> None:
        self._samples.append((view, sharp))
        if len(self._samples) * EVAL_S < LEARN_S:
            return
        mean_view: Floats = np.mean([v for v, _ in self._samples], axis=0).astype(np.float32)
        self._ref_view = mean_view / max(float(np.linalg.norm(mean_view)), 1e-6)
        self._ref_sharp = float(np.median([s for _, s in self._samples]))
        self._samples = []

    def _debounced(self, fault: str, condition: bool, t: float, value: float) -> list[HealthChange]:
        check = self._checks[fault]
        if not check.update(condition, t):
            return []
        if check.active:
            self.active.add(fault)
        else:
            self.active.discard(fault)
        return [self._change(fault, check.active, value)]

    def _clear(self, fault: str) -> bool:
        if fault in self._checks:
            self._checks[fault].active, self._checks[fault].since = False, None
        if fault not in self.active:
            return False
        self.active.discard(fault)
        return True

    def _change(self, fault: str, active: bool, value: float) -> HealthChange:
        return HealthChange(self.camera, fault, active, round(value, 3))
