"""Generated scenes for the synthetic camera (hw-sim, demo, tests), each with a script.

A scene is named by the camera's ``url``, with its script in a query string, times in
seconds from the start of the camera::

    walker                       a dark person-sized shape crosses a textured view, again
        start=1 period=6 pause=2 first crossing at `start`, `period` s to cross, then a pause
    lights   at=5 off=0          brightness steps up (lights on) at `at`; down again at `off`
    dusk     start=2 fade=6      slow fade, then the IR cut-over: grey and brighter
    rain     density=40          random bright streaks (streaks per frame)
    covered  at=5 for=8          goes black at `at` for `for` s (0: for good)
    defocus  at=5 for=0          blurred from `at`
    turned   at=5 for=0          the camera looks elsewhere from `at`
    lost     at=5 for=8          no frames at all from `at` for `for` s

e.g. ``walker?start=2&period=8`` or ``covered?at=3&for=6``. Every scene has ``seed`` (the
view) and sensor noise, so no two frames are identical (a frozen picture is a fault).
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
    "walker": {"start": 1.0, "period": 6.0, "pause": 2.0, "seed": 1},
    "lights": {"at": 5.0, "off": 0.0, "seed": 1},
    "dusk": {"start": 2.0, "fade": 6.0, "seed": 1},
    "rain": {"density": 40.0, "seed": 1},
    "covered": {"at": 5.0, "for": 8.0, "seed": 1},
    "defocus": {"at": 5.0, "for": 0.0, "seed": 1},
    "turned": {"at": 5.0, "for": 0.0, "seed": 1},
    "lost": {"at": 5.0, "for": 8.0, "seed": 1},
}
NOISE_SIGMA = 1.5
NOISE_FRAMES = 7  # a bank reused in turn: cheap, and consecutive frames always differ


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
        shape = (self.height * 3 // 2, self.width)
        self._noise = [
            rng.normal(0, NOISE_SIGMA, size=shape).round().astype(np.int16)
            for _ in range(NOISE_FRAMES)
        ]
        self._chroma = slice(self.height, None)  # rows of U then V, two chroma rows per row
        self._other: Image | None = None

    def render(self, t: float, index: int) -> Image | None:
        """Frame ``index`` at ``t`` seconds; a fresh array the caller may modify."""
        s = self.script
        if self.name == "lost" and _between(t, s["at"], s["for"]):
            return None
        img = self._base(t)
        noise = self._noise[index % NOISE_FRAMES]
        out = np.add(img, noise, dtype=np.int16)
        if self.name == "rain":
            self._rain(out, index)
        return np.clip(out, 0, 255).astype(np.uint8)

    def _base(self, t: float) -> Image:
        s, view = self.script, self._view
        if self.name in ("covered", "defocus", "turned") and _between(t, s["at"], s["for"]):
            return self._changed()
        if self.name == "walker":
            return self._walker(t)
        if self.name == "lights":
            lit = t >= s["at"] and not (s["off"] > s["at"] and t >= s["off"])
            return view if lit else self._graded(0.45, 0.0, grey=False)
        if self.name == "dusk":
            if t < s["start"]:
                return view
            if t < s["start"] + s["fade"]:
                return self._graded(1.0 - 0.6 * (t - s["start"]) / s["fade"], 0.0, grey=False)
            return self._graded(0.7, 60.0, grey=True)  # infrared: no colour, lit by the LEDs
        return view

    def _graded(self, gain: float, offset: float, grey: bool) -> Image:
        img = self._view.astype(np.float32)
        y = img[: self.height]
        y *= gain
        y += offset
        if grey:
            img[self._chroma] = 128.0
        else:  # colour fades towards grey with the light
            img[self._chroma] = 128.0 + (img[self._chroma] - 128.0) * gain
        return np.clip(img, 0, 255).astype(np.uint8)

    def _changed(self) -> Image:
        if self._other is None:
            if self.name == "covered":
                self._other = self._graded(0.03, 0.0, grey=True)
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

    def _walker(self, t: float) -> Image:
        s = self.script
        img = self._view.copy()
        cycle = s["period"] + s["pause"]
        if t < s["start"] or cycle <= 0:
            return img
        phase = ((t - s["start"]) % cycle) / max(s["period"], 1e-6)
        if phase > 1.0:
            return img
        w, h = self.width, self.height
        pw, ph = max(4, w // 12), max(8, h * 9 // 20)
        x0 = int(-pw + (w + pw) * phase)
        y0 = h * 5 // 10
        xs = slice(max(0, x0), max(0, min(w, x0 + pw)))
        y = img[:h]
        y[y0 + ph // 6 : min(h, y0 + ph), xs] = 45  # body
        head = slice(max(0, x0 + pw // 4), max(0, min(w, x0 + 3 * pw // 4)))
        y[y0 : y0 + ph // 6, head] = 70
        return img

    def _rain(self, out: npt.NDArray[np.int16], index: int) -> None:
        rng = np.random.default_rng(index)
        w, h = self.width, self.height
        y = out[:h]
        length = max(4, h // 20)
        n = int(self.script["density"])
        for x, y0 in zip(rng.integers(0, w, n), rng.integers(0, h - length, n), strict=True):
            rows = np.arange(y0, y0 + length)
            cols = np.clip(x + (rows - y0) // 4, 0, w - 1)
            y[rows, cols] += 70


def _view(rng: np.random.Generator, w: int, h: int) -> Image:
    """A static textured view: sky gradient, blocks of colour (walls, windows), fine lines."""
    y = np.repeat(np.linspace(150, 95, h, dtype=np.float32)[:, None], w, axis=1)
    u = np.full((h, w), 128.0, dtype=np.float32)
    v = np.full((h, w), 128.0, dtype=np.float32)
    for _ in range(70):
        bw = int(rng.integers(max(2, w // 40), max(3, w // 4)))
        bh = int(rng.integers(max(2, h // 30), max(3, h // 3)))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(h // 5, h - bh))
        y[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(35, 215)
        u[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(100, 156)
        v[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(100, 156)
    step = max(3, w // 64)
    y[h // 5 :: step * 3, :] -= 25  # courses of brick, fence rails: texture at every scale
    y[:, :: step * 5] += 20
    cu = u.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    cv = v.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    planes = [np.clip(p, 0, 255).astype(np.uint8).reshape(-1) for p in (y, cu, cv)]
    return np.concatenate(planes).reshape(h * 3 // 2, w)


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
