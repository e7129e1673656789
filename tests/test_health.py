"""Camera health on the synthetic scenes and on real footage: every fault once with its
restore, and no false fault from lighting, dusk / IR, rain or people walking."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from edge.config.video import Camera, Health
from edge.video.frames import LumaFrame
from edge.video.health import (
    COVERED,
    DEFOCUS,
    FROZEN,
    SCENE_CHANGE,
    SIGNAL_LOSS,
    HealthChange,
    HealthMonitor,
)
from edge.video.sources.pyav_source import PyAVSource
from edge.video.sources.synthetic import SyntheticSource

PETS = Path("/work/shared/data/pets2009-campus-480x360.avi")


async def watch(url: str, seconds: float) -> list[tuple[float, HealthChange]]:
    """Run a synthetic camera (as fast as possible) through a monitor on the frames' clock."""
    cam = Camera(id="cam1", source="synthetic", url=url, width=320, height=240, fps=10)
    src = SyntheticSource(cam, realtime=False)
    monitor = HealthMonitor(cam.health, cam.fps, cam.id)
    seen: list[tuple[float, HealthChange]] = []
    try:
        async for item in src.packets():
            if isinstance(item, LumaFrame):
                t = item.seconds
                seen += [(t, c) for c in monitor.tick(t) + monitor.feed(item, t)]
                if t >= seconds:
                    break
    finally:
        await src.close()
    assert monitor.learned
    return seen


def faults(seen: list[tuple[float, HealthChange]]) -> list[tuple[str, bool]]:
    return [(c.fault, c.active) for _, c in seen]


@pytest.mark.parametrize(
    "url",
    ["walker?start=1&period=4&pause=1", "lights?at=5&off=12", "dusk?start=4&fade=6", "rain"],
)
def test_ordinary_life_raises_no_fault(url: str) -> None:
    assert asyncio.run(watch(url, 20)) == []


def test_covered_camera_is_reported_then_restored() -> None:
    seen = asyncio.run(watch("covered?at=5&for=6", 18))
    assert faults(seen) == [(COVERED, True), (COVERED, False)]
    (t_on, on), (t_off, off) = seen
    assert 5 < t_on < 9 and on.value < 12  # mean luma under dark_level
    assert 11 < t_off < 15 and off.value > 100
    assert on.camera == "cam1"


def test_defocus_is_reported_once() -> None:
    seen = asyncio.run(watch("defocus?at=5", 15))
    assert faults(seen) == [(DEFOCUS, True)]
    assert seen[0][1].value < Health().defocus_ratio


def test_turned_camera_is_a_scene_change() -> None:
    seen = asyncio.run(watch("turned?at=5", 15))
    assert faults(seen) == [(SCENE_CHANGE, True)]
    assert seen[0][1].value < Health().scene_change


def test_lost_camera_is_a_signal_loss_until_frames_return() -> None:
    seen = asyncio.run(watch("lost?at=5&for=8", 16))
    assert faults(seen) == [(SIGNAL_LOSS, True), (SIGNAL_LOSS, False)]
    assert seen[0][1].value >= Health().signal_loss_s


def test_real_footage_of_people_walking_raises_no_fault() -> None:
    async def main() -> list[HealthChange]:
        cam = Camera(id="campus", source="file", url=str(PETS))
        src = PyAVSource(cam, realtime=False)
        monitor = HealthMonitor(cam.health, 10, cam.id)
        changes: list[HealthChange] = []
        n = 0
        async for item in src.packets():
            if isinstance(item, LumaFrame):
                n += 1  # the AVI's timestamps are decode-order guesses: use the frame count
                changes += monitor.tick(n / 10) + monitor.feed(item, n / 10)
        assert n == 795 and monitor.learned
        return changes

    assert asyncio.run(main()) == []


def frame(y: np.ndarray) -> LumaFrame:
    return LumaFrame("cam1", 0, Fraction(1, 10), y)


def test_identical_frames_are_frozen_after_frozen_s_and_restore_on_change() -> None:
    rng = np.random.default_rng(0)
    still = rng.integers(40, 200, (120, 160), dtype=np.uint8)
    monitor = HealthMonitor(Health(frozen_s=4), fps=10)
    changes = []
    for n in range(60):
        changes += [(n, c.fault, c.active) for c in monitor.feed(frame(still), n / 10)]
    moved = np.roll(still, 5, axis=1)
    changes += [(60, c.fault, c.active) for c in monitor.feed(frame(moved), 6.0)]
    assert changes == [(40, FROZEN, True), (60, FROZEN, False)]  # 4 s after frame 0


def test_a_dark_still_picture_is_covered_not_frozen() -> None:
    monitor = HealthMonitor(Health(frozen_s=2), fps=10)
    dark = np.full((120, 160), 5, dtype=np.uint8)
    seen = [c.fault for n in range(60) for c in monitor.feed(frame(dark), n / 10)]
    assert seen == [COVERED]


def test_signal_loss_needs_a_first_frame_and_the_full_delay() -> None:
    monitor = HealthMonitor(Health(signal_loss_s=5), fps=10, camera="cam1")
    assert monitor.tick(100.0) == []  # never seen: not started, not lost
    monitor.feed(frame(np.full((120, 160), 90, np.uint8)), 0.0)
    assert monitor.tick(4.9) == []
    lost = monitor.tick(5.5)
    assert [(c.camera, c.fault, c.active) for c in lost] == [("cam1", SIGNAL_LOSS, True)]
    assert monitor.tick(9.0) == []  # reported once


def test_relearning_accepts_the_new_view() -> None:
    async def main() -> list[str]:
        cam = Camera(id="c", source="synthetic", url="turned?at=4", width=320, height=240, fps=10)
        src = SyntheticSource(cam, realtime=False)
        monitor = HealthMonitor(cam.health, cam.fps, cam.id)
        log: list[str] = []
        async for item in src.packets():
            if not isinstance(item, LumaFrame):
                continue
            t = item.seconds
            for c in monitor.feed(item, t):
                log.append(f"{c.fault}={c.active}")
                if c.active:
                    log += [f"{r.fault}={r.active}" for r in monitor.relearn()]  # re-aimed
            if t >= 20:
                break
        await src.close()
        return log

    assert asyncio.run(main()) == ["scene_change=True", "scene_change=False"]
