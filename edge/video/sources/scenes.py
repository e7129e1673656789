"""Generated scenes for the synthetic camera (hw-sim, demo, tests), each with a script.

A scene is named by the camera's ``url``, with its script in a query string, times in
seconds from the start of the camera::

    walker                       a dark person-sized shape crosses a textured view, again
        start=1 period=6 pause=2 first crossing at `start`, `period` s to cross, then a pause;
        ir=0                     with `ir` > 0: the IR day/night switch at `ir` s, mid-walk
    lights   at=5 off=0          brightness steps up (lights on) at `at`; down again at `off`
    dusk     start=2 fade=6      slow fade, then the IR day/night switch
    ir       at=5 back=0         the IR day/night switch at `at`; back to day at `back` (0: no)
    rain     density=40          random bright streaks (streaks per frame)
    covered  at=5 for=8          goes black at `at` for `for` s (0: for good)
    defocus  at=5 for=0          blurred from `at`
    turned   at=5 for=0          the camera looks elsewhere from `at`
    lost     at=5 for=8          no frames at all from `at` for `for` s

e.g. ``walker?start=2&period=8`` or ``covered?at=3&for=6``. Every scene has ``seed`` (the
view) and sensor noise, so no two frames are identical (a frozen picture is a fault).
The IR day/night switch is what an infrared camera does when its cut filter moves and its LEDs
light the scene: the picture turns grey, its shadows are lifted (gamma IR_GAMMA) and its
contrast flattened (IR_CONTRAST) around an unchanged mean brightness. It is a global change of
the luma mapping (ir_switch_table), not a uniform brightening: about 40 % of the motion grid
cells change while the mean barely moves. Tests apply the same table to real footage.

Frames are planar YUV 4:2:0 arrays of shape (h*3/2, w), the layout PyAV's ``yuv420p`` and
picamera2's ``YUV420`` use, so the same mask and encoder code serves every source.
"""

from __future__ import annotations

import urllib.parse

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError

Image = npt.NDArray[np.uint8]

SCRIPTS: dict[str, dict[str, float]] = {
    "walker": {"start": 1.0, "period": 6.0, "pause": 2.0, "ir": 0.0, "seed": 1},
    "lights": {"at": 5.0, "off": 0.0, "seed": 1},
    "dusk": {"start": 2.0, "fade": 6.0, "seed": 1},
    "ir": {"at": 5.0, "back": 0.0, "seed": 1},
    "rain": {"density": 40.0, "seed": 1},
    "covered": {"at": 5.0, "for": 8.0, "seed": 1},
    "defocus": {"at": 5.0, "for": 0.0, "seed": 1},
    "turned": {"at": 5.0, "for": 0.0, "seed": 1},
    "lost": {"at": 5.0, "for": 8.0, "seed": 1},
}
NOISE_SIGMA = 1.5
NOISE_MAX = 6  # |noise| <= 4 sigma: lets it be added in uint8 without overflow
NOISE_SHIFT = 4099  # elements the window moves per frame: consecutive frames always differ
NOISE_WINDOWS = 31  # frames before the noise repeats
NOISE_SPAN = NOISE_WINDOWS * NOISE_SHIFT  # bank length beyond one frame
_CHUNK = 1 << 16  # noise is drawn in chunks: no full-frame float temporaries
IR_GAMMA = 0.7  # the IR picture's shadows are lifted ...
IR_CONTRAST = 0.7  # ... and its contrast flattened, around the same mean brightness
DUSK_GAIN = 0.4  # the light left at the end of the dusk fade


def ir_switch_table(
    hist: npt.NDArray[np.integer], gamma: float = IR_GAMMA, contrast: float = IR_CONTRAST
) -> Image:
    """Luma table (256 entries) of an IR day/night switch for a picture whose luma histogram
    is ``hist``: gamma lifts the shadows, contrast flattens around the mean, and the picture's
    mean brightness stays where it was (to rounding)."""
    levels = np.arange(256, dtype=np.float64)
    curved = 255.0 * (levels / 255.0) ** gamma
    weights = np.asarray(hist, dtype=np.float64) / max(1, int(np.sum(hist)))
    mean, curved_mean = float(weights @ levels), float(weights @ curved)
    return np.clip(np.rint(mean + contrast * (curved - curved_mean)), 0, 255).astype(np.uint8)


def gain_table(gain: float) -> Image:
    """Luma table of a plain change of light: every level times ``gain``."""
    levels = np.arange(256, dtype=np.float32)
    return np.clip(levels * np.float32(gain), 0, 255).astype(np.uint8)


def parse_scene(url: str, where: str = "synthetic camera") -> tuple[str, dict[str, float]]:
    """Scene name and script (defaults overridden by the query string) from a camera url."""
    parts = urllib.parse.urlsplit(url)
    name = parts.path.strip()
    if name not in SCRIPTS:
        raise ConfigError(where, [f"unknown scene {name!r}: use one of {', '.join(SCRIPTS)}"])
    script = dict(SCRIPTS[name])
    problems = []
    for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if key not in script:
            problems.append(f"scene {name} has no {key!r}: use {', '.join(script)}")
            continue
        try:
            script[key] = float(value)
        except ValueError:
            problems.append(f"scene {name}: {key}={value!r} is not a number of seconds")
    if problems:
        raise ConfigError(where, problems)
    return name, script


def _between(t: float, at: float, duration: float) -> bool:
    return t >= at and (duration <= 0 or t < at + duration)


class Scene:
    """Renders a scene's frame at time ``t``; None when the scripted camera sends nothing."""

    def __init__(self, url: str, width: int, height: int, where: str = "synthetic camera") -> None:
        self.name, self.script = parse_scene(url, where)
        self.width, self.height = width - width % 2, height - height % 2
        rng = np.random.default_rng(int(self.script["seed"]))
        self._view = _view(rng, self.width, self.height)
        self._size = self._view.size
        self._noise = _noise_bank(rng, self._size + NOISE_SPAN)
        self._chroma = slice(self.height, None)  # rows of U then V, two chroma rows per row
        self._other: Image | None = None
        self._hist = np.bincount(self._view[: self.height].ravel(), minlength=256)
        self._tables: dict[str, Image] = {}

    def render(self, t: float, index: int, out: Image | None = None) -> Image | None:
        """Frame ``index`` at ``t`` seconds, in ``out`` if given (it is overwritten) or in a
        fresh array; either way the caller may modify it.

        Everything happens in uint8, in place: a frame costs no temporaries of its size.
        """
        s = self.script
        if self.name == "lost" and _between(t, s["at"], s["for"]):
            return None
        if out is None:
            out = np.empty(self._view.shape, dtype=np.uint8)
        self._base(t, out)
        # The bank holds noise + NOISE_MAX; the clip keeps base + noise inside 0..255.
        np.clip(out, NOISE_MAX, 255 - NOISE_MAX, out=out)
        start = (index % NOISE_WINDOWS) * NOISE_SHIFT
        flat = out.reshape(-1)
        flat += self._noise[start : start + self._size]
        flat -= NOISE_MAX
        if self.name == "rain":
            self._rain(out, index)
        return out

    def _base(self, t: float, out: Image) -> None:
        """Write the noiseless picture at ``t`` into ``out``."""
        s, view = self.script, self._view
        if self.name in ("covered", "defocus", "turned") and _between(t, s["at"], s["for"]):
            out[...] = self._changed()
        elif self.name == "walker":
            self._walker(t, out)
            if 0 < s["ir"] <= t:
                self._infrared(out, out, self._table("ir"))
        elif self.name == "lights":
            lit = t >= s["at"] and not (s["off"] > s["at"] and t >= s["off"])
            self._graded(1.0 if lit else 0.45, 0.0, False, out)
        elif self.name == "dusk" and t >= s["start"]:
            if t < s["start"] + s["fade"]:
                gain = 1.0 - (1.0 - DUSK_GAIN) * (t - s["start"]) / s["fade"]
                self._graded(gain, 0.0, False, out)
            else:
                self._infrared(view, out, self._table("dusk"))
        elif self.name == "ir" and t >= s["at"] and not (s["back"] > s["at"] and t >= s["back"]):
            self._infrared(view, out, self._table("ir"))
        else:
            out[...] = view

    def _table(self, which: str) -> Image:
        """The luma table of the IR switch: of the view, or of the view at the end of dusk."""
        if which not in self._tables:
            if which == "dusk":
                dim = gain_table(DUSK_GAIN)
                hist = np.bincount(dim, weights=self._hist, minlength=256)
                self._tables[which] = ir_switch_table(hist)[dim]
            else:
                self._tables[which] = ir_switch_table(self._hist)
        return self._tables[which]

    def _infrared(self, src: Image, out: Image, table: Image) -> None:
        """``src`` as the IR camera shows it: luma through ``table``, no colour."""
        h = self.height
        np.take(table, src[:h], out=out[:h])  # buffered by numpy: src may be out
        out[h:] = 128

    def _graded(self, gain: float, offset: float, grey: bool, out: Image) -> None:
        """The view under other light, through 256-entry tables: no float copy of a frame."""
        if gain == 1.0 and offset == 0.0 and not grey:
            out[...] = self._view
            return
        levels = np.arange(256, dtype=np.float32)
        luma = np.clip(levels * np.float32(gain) + np.float32(offset), 0, 255).astype(np.uint8)
        if grey:
            chroma = np.full(256, 128, dtype=np.uint8)
        else:  # colour fades towards grey with the light
            chroma = np.clip(128.0 + (levels - 128.0) * np.float32(gain), 0, 255).astype(np.uint8)
        h = self.height
        np.take(luma, self._view[:h], out=out[:h])
        np.take(chroma, self._view[h:], out=out[h:])

    def _changed(self) -> Image:
        if self._other is None:
            if self.name == "covered":
                self._other = np.empty_like(self._view)
                self._graded(0.03, 0.0, True, self._other)
            elif self.name == "defocus":
                self._other = _blurred(self._view, self.width, self.height)
            else:  # turned: the view pans by about half a frame and tilts
                h, w = self.height, self.width
                dy, dx = h // 3, w * 9 // 20
                c = self._view[h:].reshape(2, h // 2, w // 2)
                self._other = np.concatenate(
                    [
                        np.roll(self._view[:h], (dy, dx), axis=(0, 1)).reshape(-1),
                        np.roll(c, (dy // 2, dx // 2), axis=(1, 2)).reshape(-1),
                    ]
                ).reshape(self._view.shape)
        return self._other

    def _walker(self, t: float, out: Image) -> None:
        s = self.script
        out[...] = self._view
        cycle = s["period"] + s["pause"]
        if t < s["start"] or cycle <= 0:
            return
        phase = ((t - s["start"]) % cycle) / max(s["period"], 1e-6)
        if phase > 1.0:
            return
        w, h = self.width, self.height
        pw, ph = max(4, w // 12), max(8, h * 9 // 20)
        x0 = int(-pw + (w + pw) * phase)
        y0 = h * 5 // 10
        xs = slice(max(0, x0), max(0, min(w, x0 + pw)))
        y = out[:h]
        y[y0 + ph // 6 : min(h, y0 + ph), xs] = 45  # body
        head = slice(max(0, x0 + pw // 4), max(0, min(w, x0 + 3 * pw // 4)))
        y[y0 : y0 + ph // 6, head] = 70

    def _rain(self, out: Image, index: int) -> None:
        rng = np.random.default_rng(index)
        w, h = self.width, self.height
        y = out[:h]
        length = max(4, h // 20)
        n = int(self.script["density"])
        for x, y0 in zip(rng.integers(0, w, n), rng.integers(0, h - length, n), strict=True):
            rows = np.arange(y0, y0 + length)
            cols = np.clip(x + (rows - y0) // 4, 0, w - 1)
            y[rows, cols] = np.minimum(y[rows, cols], 255 - 70) + 70  # saturating, in uint8


def _noise_bank(rng: np.random.Generator, size: int) -> Image:
    """Rounded Gaussian sensor noise plus NOISE_MAX (so 0..2*NOISE_MAX), one byte a sample.

    A frame adds a window of it; the window moves every frame, so pixels get fresh values.
    """
    bank = np.empty(size, dtype=np.uint8)
    draw = np.empty(_CHUNK, dtype=np.float32)
    for start in range(0, size, _CHUNK):
        part = draw[: min(_CHUNK, size - start)]
        rng.standard_normal(out=part, dtype=np.float32)
        part *= NOISE_SIGMA
        np.rint(part, out=part)
        np.clip(part, -NOISE_MAX, NOISE_MAX, out=part)
        part += NOISE_MAX
        bank[start : start + part.size] = part
    return bank


def _view(rng: np.random.Generator, w: int, h: int) -> Image:
    """A static textured view: sky gradient, blocks of colour (walls, windows), fine lines.

    Built straight into the I420 buffer, one plane at a time, so that building it leaves no
    large freed temporaries behind for the allocator to keep.
    """
    blocks: list[tuple[tuple[slice, slice], float, float, float]] = []
    for _ in range(70):
        bw = int(rng.integers(max(2, w // 40), max(3, w // 4)))
        bh = int(rng.integers(max(2, h // 30), max(3, h // 3)))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(h // 5, h - bh))
        at = (slice(y0, y0 + bh), slice(x0, x0 + bw))
        blocks.append((at, rng.uniform(35, 215), rng.uniform(100, 156), rng.uniform(100, 156)))
    out = np.empty((h * 3 // 2, w), dtype=np.uint8)
    # Luma in uint8 (assignment truncates, as the float version's final cast did): the values
    # stay within 10..235, so the brick and rail lines below can neither wrap nor clip.
    y = out[:h]
    y[...] = np.linspace(150, 95, h, dtype=np.float32)[:, None]
    for at, luma, _, _ in blocks:
        y[at] = luma
    step = max(3, w // 64)
    y[h // 5 :: step * 3, :] -= 25  # courses of brick, fence rails: texture at every scale
    y[:, :: step * 5] += 20
    chroma = out[h:].reshape(2, h // 2, w // 2)
    for k in (0, 1):  # U then V: painted at full resolution, then 2x2 means
        plane = np.full((h, w), 128.0, dtype=np.float32)
        for at, _, u, v in blocks:
            plane[at] = v if k else u
        mean = plane.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
        chroma[k] = np.clip(mean, 0, 255)
        del plane, mean
    return out


def _box(a: npt.NDArray[np.float32], r: int, axis: int) -> npt.NDArray[np.float32]:
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r + 1, r)
    c = np.cumsum(np.pad(a, pad, mode="edge"), axis=axis, dtype=np.float32)
    n = a.shape[axis]
    hi = np.take(c, np.arange(2 * r + 1, 2 * r + 1 + n), axis=axis)
    lo = np.take(c, np.arange(0, n), axis=axis)
    return ((hi - lo) / (2 * r + 1)).astype(np.float32)


def _blurred(img: Image, w: int, h: int) -> Image:
    """An out-of-focus version: three box passes approximate a Gaussian of ~w/80 px."""
    r = max(2, w // 80)
    y = img[:h].astype(np.float32)
    for _ in range(3):
        y = _box(_box(y, r, 0), r, 1)
    out = img.copy()
    out[:h] = np.clip(y, 0, 255).astype(np.uint8)
    return out
