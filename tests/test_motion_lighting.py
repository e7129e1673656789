"""Lighting changes on real footage: an IR day/night switch or a lights step is not motion, and
an event under way goes through one as a single event.

The footage is the PETS 2009 campus clip (see tests/test_motion.py for its ground truth: the
lawn below the footpath is empty until 50.3 s, crossed by people until 71.5 s, empty after;
people walk on the footpath throughout). Lighting changes are applied to the real frames
with the same luma tables as the synthetic camera's scenes (edge/video/sources/scenes.py):
the IR switch greys the picture, lifts its shadows (gamma) and flattens its contrast around
an unchanged mean; a lights step multiplies every level.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge.config.video import Motion
from edge.video.motion import MotionDetector, MotionEvent
from edge.video.sources.scenes import Scene, gain_table, ir_switch_table

PETS = Path(__file__).resolve().parents[2] / "shared/data/pets2009-campus-480x360.avi"
needs_pets = pytest.mark.skipif(
    not PETS.exists(),
    reason=f"the shared PETS 2009 footage {PETS} is not on this machine (never copied here)",
)
GRASS = [[0, 0.55], [1, 0.95], [1, 1], [0, 1]]
FOOTPATH = [[0, 0.2], [1, 0.45], [1, 0.7], [0, 0.4]]
FPS = 10.0
STRIDE = 2  # the detector's stride for 360 rows: frames are kept decimated (34 MB, not 137)
U8 = npt.NDArray[np.uint8]
Table = Callable[[U8], U8]


@pytest.fixture(scope="module")
def campus() -> list[U8]:
    """Every frame's luma at the analysis stride. A luma table is per pixel, so applying it
    before or after decimation is the same; the detector takes decimated frames as they are."""
    import av

    if not PETS.exists():
        pytest.skip(f"the shared PETS 2009 footage {PETS} is not on this machine")
    with av.open(str(PETS)) as container:
        return [
            np.ascontiguousarray(f.to_ndarray(format="gray")[::STRIDE, ::STRIDE])
            for f in container.decode(container.streams.video[0])
        ]


def _zones() -> Motion:
    return Motion.model_validate(
        {
            "zones": [
                {"id": "grass", "polygon": GRASS, "action": "alarm"},
                {"id": "footpath", "polygon": FOOTPATH},
            ]
        }
    )


def _ir(gamma: float = 0.7, contrast: float = 0.7) -> Table:
    def table(frame: U8) -> U8:
        return ir_switch_table(np.bincount(frame.ravel(), minlength=256), gamma, contrast)

    return table


def _lights(gain: float) -> Table:
    return lambda frame: gain_table(gain)


def _switched(frames: list[U8], at_s: float, table: Table) -> list[U8]:
    """The clip with a lighting change at ``at_s`` for good (the table is fitted to the frame
    at the switch, as a camera's switch is to its scene)."""
    k = round(at_s * FPS)
    lut = table(frames[k])
    return frames[:k] + [lut[f] for f in frames[k:]]


def _analyse(frames: list[U8]) -> tuple[list[MotionEvent], list[dict[str, Any]]]:
    """Every event (ended, and open at the end as they stand) and every frame's stats."""
    det = MotionDetector(_zones(), (360, 480))
    events: list[MotionEvent] = []
    stats = []
    for i, y in enumerate(frames):
        events += [e for e in det.feed(y, i / FPS) if e.end_s is not None]
        stats.append(det.last_stats)
    return events + list(det.active.values()), stats


def _zone(events: list[MotionEvent], zone: str) -> list[tuple[float, float]]:
    return [(e.start_s, e.last_s) for e in events if e.zone == zone]


def _lighting(stats: list[dict[str, Any]]) -> list[float]:
    return [s["t_s"] for s in stats if s["lighting"]]


@needs_pets
@pytest.mark.parametrize(
    ("gamma", "contrast"), [(0.7, 0.7), (0.6, 0.6), (0.5, 0.8)], ids=["ir", "strong", "gamma"]
)
def test_ir_switch_on_the_still_lawn_is_not_motion(
    campus: list[U8], gamma: float, contrast: float
) -> None:
    frames = _switched(campus, 20.0, _ir(gamma, contrast))
    mean_step = abs(float(frames[200].mean()) - float(campus[200].mean()))
    assert mean_step < 2.0, "the IR switch keeps the mean brightness"
    events, stats = _analyse(frames)
    grass = _zone(events, "grass")
    # The lawn is empty until 50.3 s: nothing may start there before 49 s (the old detector
    # made one event from 20.0 s to the end of the real crossing).
    assert all(start >= 49.0 for start, _ in grass), grass
    assert sum(end - start for start, end in grass) >= 12.0, "the real crossing is still seen"
    assert _lighting(stats) == [20.0], "one lighting change, at the switch"
    assert not any(s["holdoff"] or s["relearnt"] for s in stats), "never blind"
    assert len(_zone(events, "footpath")) == 1, "the footpath walkers: one event throughout"


@needs_pets
@pytest.mark.parametrize(
    "table", [_lights(1.6), _lights(0.5), _ir()], ids=["lights-on", "lights-off", "ir"]
)
def test_lighting_step_during_activity_keeps_one_event(campus: list[U8], table: Table) -> None:
    """People are crossing the lawn at 60 s: one alarm event goes through the step (the old
    detector ended it, went blind for 2 s and opened a second one: a duplicate alarm)."""
    events, stats = _analyse(_switched(campus, 60.0, table))
    grass = _zone(events, "grass")
    across = [(s, e) for s, e in grass if s <= 59.0 and e >= 62.0]
    assert len(across) == 1, grass
    assert not any(59.0 <= s <= 63.0 for s, _ in grass), f"a second event at the step: {grass}"
    assert all(s >= 49.0 for s, _ in grass), grass
    assert _lighting(stats) == [60.0]
    footpath = _zone(events, "footpath")
    assert len(footpath) == 1 and footpath[0][0] < 2.0, footpath


def test_a_change_no_tone_map_explains_holds_new_motion_off_but_keeps_the_event() -> None:
    """The camera is knocked upside down while a person crosses: no tone map explains that,
    so the background is relearnt and new motion is held off for lighting_holdoff_s (2 s);
    the event under way neither ends nor restarts meanwhile (it used to end, and a second
    one started after the hold-off)."""
    scene = Scene("walker?start=1&period=6&pause=2", 320, 240)
    det = MotionDetector(Motion(), (240, 320))
    events, stats = [], []
    for i in range(80):  # the walker crosses from 1 s to 7 s; the camera turns over at 3 s
        t = i / FPS
        frame = scene.render(t, i)
        assert frame is not None
        y = frame[:240] if t < 3.0 else np.ascontiguousarray(frame[239::-1])
        events += det.feed(y, t)
        stats.append(det.last_stats)
    assert [s["t_s"] for s in stats if s["relearnt"]] == [3.0]
    held = [s["t_s"] for s in stats if s["holdoff"]]
    assert held[0] == 3.0 and held[-1] == pytest.approx(4.9), held
    assert all(s["cells_changed"]["frame"] == 0 for s in stats[30:50])  # not judged meanwhile
    # One start, no end: the event goes on (what the walker leaves in the relearnt background
    # at the end of the hold-off keeps it going for a while; a knock is camera health's).
    assert [(e.start_s, e.end_s) for e in events] == [(1.1, None)]
    assert det.active["frame"].last_s >= 6.5


# -- the synthetic camera's IR switch ---------------------------------------------------------
def test_ir_scene_greys_the_picture_and_changes_contrast_not_brightness() -> None:
    scene = Scene("ir?at=1&back=2", 320, 240)
    day, night, back = (scene.render(t, i) for i, t in enumerate((0.5, 1.5, 2.5)))
    assert day is not None and night is not None and back is not None
    y_day, y_night = day[:240].astype(np.int16), night[:240].astype(np.int16)
    assert abs(float(y_night.mean()) - float(y_day.mean())) < 2.0
    assert float(np.mean(np.abs(y_night - y_day) > 25)) > 0.08, "a real change of the picture"
    assert float(y_night.std()) < 0.8 * float(y_day.std()), "flatter"
    assert np.all(np.abs(night[240:].astype(np.int16) - 128) <= 6), "grey: no colour"
    assert float(np.abs(day[240:].astype(np.int16) - 128).max()) > 10
    assert np.abs(back[:240].astype(np.int16) - y_day).mean() < 3.0, "back to day at `back`"
    table = ir_switch_table(np.bincount(day[:240].ravel(), minlength=256))
    assert np.all(np.diff(table.astype(np.int16)) >= 0), "monotonic"
    assert table[30] > 30 + 20 and table[220] < 220 - 20, "shadows lifted, highlights lowered"


def test_ir_scene_switching_night_and_back_gives_no_event_and_no_blind_time() -> None:
    scene = Scene("ir?at=2&back=6", 320, 240)
    det = MotionDetector(Motion(), (240, 320))
    events, lighting = [], []
    for i in range(90):
        frame = scene.render(i / FPS, i)
        assert frame is not None
        events += det.feed(frame[:240], i / FPS)
        assert not det.last_stats["holdoff"]
        if det.last_stats["lighting"]:
            lighting.append(det.last_stats["t_s"])
    assert events + det.flush(9.0) == []
    assert lighting == [2.0, 6.0]
