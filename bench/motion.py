"""Motion pre-analysis CPU cost: our numpy detector vs a re-implementation of Frigate's.

Both take the same full-resolution luma plane per frame (ours decimates by integer stride
inside ``feed``, Frigate's resizes to 100 rows with OpenCV) and are timed frame by frame,
interleaved, after a warm-up. Frames: the PETS 2009 campus clip (real people walking)
upscaled with OpenCV to 640x480 and 1280x720, then a synthetic textured scene with a walker
and sensor noise. BLAS and OpenCV are pinned to one thread so the figures resemble one busy
Raspberry Pi core rather than this machine's scheduler. Figures are the median over all timed
frames of a pass, best of REPEATS passes.

The reference uses Frigate's current constructor default (INTER_NEAREST); a second line
reports INTER_LINEAR (older releases) for information.

Lighting: the seconds of motion each detector reports on a still synthetic scene (640x480,
10 fps) after an infrared day/night switch (scenes.py's `ir`: grey, contrast and gamma change,
same mean brightness) that comes 2 s in, over 30 s: for ours the length of its events, for the
reference the time its frames carry motion boxes (its own notion of motion; Frigate has no
persistence of its own in the detector). Last stdout line: one JSON object.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from ref_frigate_motion import FrigateImprovedMotion  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge.config.video import Motion  # noqa: E402
from edge.video.motion import MotionDetector  # noqa: E402
from edge.video.sources.scenes import Scene  # noqa: E402

PETS = REPO.parent / "shared/data/pets2009-campus-480x360.avi"
PETS_FRAMES = 400
SYNTHETIC_FRAMES = 200
WARMUP = 20
REPEATS = 3
SIZES = {"480p": (480, 640), "720p": (720, 1280)}
IR_AT_S = 2.0
IR_FRAMES = 300

Frames = list[np.ndarray[Any, Any]]


def pets_luma(limit: int) -> Frames:
    with av.open(str(PETS)) as container:
        stream = container.streams.video[0]
        frames = []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="gray"))
            if len(frames) == limit:
                break
    return frames


def synthetic(shape: tuple[int, int], count: int, seed: int = 7) -> Frames:
    """A textured wall with a dark walker crossing it and mild sensor noise."""
    rng = np.random.default_rng(seed)
    h, w = shape
    base = cv2.GaussianBlur(rng.integers(40, 200, (h, w), dtype=np.uint8), (0, 0), 3)
    frames = []
    for i in range(count):
        f = base.astype(np.int16) + rng.integers(-4, 5, (h, w), dtype=np.int16)
        x = int(i / count * (w - w // 10))
        f[h // 3 : h // 3 + h // 4, x : x + w // 20] = 30
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


def time_pair(frames: Frames, interpolation: int) -> tuple[list[float], list[float]]:
    """Per-frame milliseconds (ours, reference) after WARMUP frames, interleaved."""
    shape = (frames[0].shape[0], frames[0].shape[1])
    ours, ref = MotionDetector(Motion(), shape), FrigateImprovedMotion(shape, None, interpolation)
    ours_ms, ref_ms = [], []
    clock = time.perf_counter_ns
    for i, y in enumerate(frames):
        t0 = clock()
        ours.feed(y, i / 10)
        t1 = clock()
        ref.detect(y)
        t2 = clock()
        if i >= WARMUP:
            ours_ms.append((t1 - t0) / 1e6)
            ref_ms.append((t2 - t1) / 1e6)
    return ours_ms, ref_ms


def frames_for(size: str, real: Frames) -> dict[str, Frames]:
    h, w = SIZES[size]
    upscaled = [cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in real]
    return {"pets": upscaled, "synthetic": synthetic((h, w), SYNTHETIC_FRAMES)}


def measure(frames: dict[str, Frames], interpolation: int) -> tuple[float, float]:
    """(ours, reference) ms per frame: per-repeat medians over every frame, best repeat.

    The best of REPEATS medians filters out the other processes of a shared machine, which
    only ever add time; both detectors get the same treatment.
    """
    ours_runs, ref_runs = [], []
    for _ in range(REPEATS):
        ours_all: list[float] = []
        ref_all: list[float] = []
        for seq in frames.values():
            ours_ms, ref_ms = time_pair(seq, interpolation)
            ours_all += ours_ms
            ref_all += ref_ms
        ours_runs.append(statistics.median(ours_all))
        ref_runs.append(statistics.median(ref_all))
    return min(ours_runs), min(ref_runs)


def ir_false_motion() -> tuple[float, float]:
    """(ours, reference) seconds of motion after an IR switch on a still scene."""
    h, w = SIZES["480p"]
    scene = Scene(f"ir?at={IR_AT_S}", w, h)
    ours, ref = MotionDetector(Motion(), (h, w)), FrigateImprovedMotion((h, w))
    events, ref_frames = [], 0
    for i in range(IR_FRAMES):
        t = i / 10
        frame = scene.render(t, i)
        assert frame is not None  # the ir scene always sends a picture
        y = frame[:h]
        events += ours.feed(y, t)
        boxes = ref.detect(y.copy())
        ref_frames += bool(boxes) and t >= IR_AT_S  # its start-up calibration is not counted
    events += ours.flush(IR_FRAMES / 10)
    ours_s = sum((e.end_s or e.start_s) - e.start_s for e in events if e.end_s is not None)
    return ours_s, ref_frames / 10


def main() -> int:
    if not PETS.exists():
        print(f"missing {PETS}: the benchmark needs the shared PETS 2009 clip", file=sys.stderr)
        return 66
    cv2.setNumThreads(1)
    real = pets_luma(PETS_FRAMES)
    result: dict[str, Any] = {"bench": "motion"}
    for size in SIZES:
        frames = frames_for(size, real)
        timed = sum(len(f) - WARMUP for f in frames.values())
        ours, ref = measure(frames, cv2.INTER_NEAREST)
        _, ref_linear = measure(frames, cv2.INTER_LINEAR)
        print(
            f"{size}: {timed} frames x {REPEATS}, ours {ours:.3f} ms, Frigate (INTER_NEAREST) "
            f"{ref:.3f} ms, ratio {ours / ref:.2f}; Frigate with INTER_LINEAR {ref_linear:.3f} "
            f"ms, ratio {ours / ref_linear:.2f}"
        )
        result[f"ours_ms_{size}"] = round(ours, 4)
        result[f"ref_ms_{size}"] = round(ref, 4)
        result[f"ratio_{size}"] = round(ours / ref, 3)
    ours_ir, ref_ir = ir_false_motion()
    print(
        f"IR day/night switch on a still scene: ours {ours_ir:.1f} s of motion events, "
        f"Frigate {ref_ir:.1f} s with motion boxes (over {IR_FRAMES / 10 - IR_AT_S:.0f} s)"
    )
    result["ir_false_s"] = round(ours_ir, 1)
    result["ir_false_s_ref"] = round(ref_ir, 1)
    print(json.dumps({k: result[k] for k in ("bench", *_keys(), "ir_false_s", "ir_false_s_ref")}))
    return 0


def _keys() -> list[str]:
    return [f"{m}_{s}" for s in SIZES for m in ("ours_ms", "ref_ms", "ratio")]


if __name__ == "__main__":
    sys.exit(main())
