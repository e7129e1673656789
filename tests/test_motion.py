"""Motion pre-analysis: real footage through the real CLI, synthetic scenes, random frames.

Ground truth for the PETS 2009 campus clip (795 frames, 10 fps, 480x360) was established by
looking, not by running our detector: every 50th frame was written to PNG (PyAV decode, a
small zlib PNG writer) and viewed, then a throwaway script differenced every frame against
the per-pixel median of the clip over a "grass" polygon (everything below the line from
(0, 0.55) to (1, 0.95) of the image, i.e. the lawn below the footpath, clear of the tripod and
of people standing on the path's edge). People walk along the footpath for the whole clip,
so the whole frame is never empty; the lawn is empty until frame ~503 (50.3 s), crossed by
people from then until ~frame 715 (71.5 s: the last walker reaches the path), and empty again
to the end (79.5 s). Viewing frames 495-730 confirmed both edges.

Note on time: the file is AVI, which stores no presentation times (PyAV's frame.time comes out
of order), so `edge motion` counts frames / 10 fps; the decoded frames are in display order.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from edge.cli import main
from edge.config.video import Motion
from edge.video.motion import MotionDetector, MotionEvent, MotionInputError
from edge.video.motion_zones import polygon_mask

REPO = Path(__file__).resolve().parents[1]
PETS = Path(__file__).resolve().parents[2] / "shared/data/pets2009-campus-480x360.avi"
GRASS = [[0, 0.55], [1, 0.95], [1, 1], [0, 1]]
FOOTPATH = [[0, 0.2], [1, 0.45], [1, 0.7], [0, 0.4]]
H, W = 360, 480
FPS = 10.0
U8 = npt.NDArray[np.uint8]


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site.toml"
    site.write_text(
        f"""
[site]
id = "campus-test"

[[video.cameras]]
id = "campus"
source = "file"
url = "{PETS}"

[[video.cameras.motion.zones]]
id = "grass"
action = "alarm"
polygon = {GRASS}

[[video.cameras.motion.zones]]
id = "footpath"
polygon = {FOOTPATH}

[[video.cameras]]
id = "spare"
source = "synthetic"
url = "walker"
""",
        encoding="utf-8",
    )
    return site


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "motion", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- real footage, through the real CLI -------------------------------------------------------
@pytest.mark.skipif(not PETS.exists(), reason=f"shared footage {PETS} is not on this machine")
def test_campus_footage_lawn_motion_only_while_people_cross_it(tmp_path: Path) -> None:
    site = _site(tmp_path)
    proc = _cli(str(PETS), "--config", str(site), "--camera", "campus", "--json")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    events = [o for o in lines if o["type"] == "motion"]
    summary = lines[-1]
    assert summary["type"] == "summary" and summary["frames"] == 795
    assert summary["stride"] == 2 and summary["lighting_changes"] == 0

    grass = [e for e in events if e["zone"] == "grass"]
    assert grass, "people crossing the lawn from 50 s to 71 s were not reported"
    assert all(e["action"] == "alarm" for e in grass)
    # Nothing on the lawn before 50.3 s nor after 71.5 s (a second of margin each side).
    assert all(e["start_s"] >= 49.0 and e["end_s"] <= 73.0 for e in grass), grass
    covered = sum(e["end_s"] - e["start_s"] for e in grass)
    assert covered >= 15.0, f"only {covered:.1f} s of the ~21 s of lawn crossing reported"
    assert any(e["start_s"] <= 55.0 for e in grass) and any(e["end_s"] >= 68.0 for e in grass)

    path = [e for e in events if e["zone"] == "footpath"]
    assert path and path[0]["start_s"] < 2.0, "people on the footpath from the start"
    assert all(e["action"] == "tag" for e in path)


@pytest.mark.skipif(not PETS.exists(), reason=f"shared footage {PETS} is not on this machine")
def test_campus_footage_in_words_without_a_config() -> None:
    proc = _cli(str(PETS), "--sensitivity", "50", "--stride-rows", "120")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert any(
        " s – " in line and "(frames 1–" in line and "zone frame: motion" in line for line in out
    )
    assert "795 frames, 79.4 s at 480x360 (analysed at 160x120, stride 3)" in proc.stdout
    assert "zone frame (tag, 192 cells): 1 event(s)" in proc.stdout


# -- CLI errors -------------------------------------------------------------------------------
def test_missing_file_exits_66(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["motion", str(tmp_path / "nope.mp4")]) == 66
    assert "no such file" in capsys.readouterr().err


def test_undecodable_file_exits_66(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    assert main(["motion", str(bad)]) == 66
    assert "not a video file" in capsys.readouterr().err


def test_unknown_or_unnamed_camera_exits_64(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    site = _site(tmp_path)
    assert main(["motion", str(PETS), "--config", str(site), "--camera", "garage"]) == 64
    assert "no camera 'garage'" in capsys.readouterr().err
    assert main(["motion", str(PETS), "--config", str(site)]) == 64
    assert "cameras: campus, spare" in capsys.readouterr().err


def test_small_mp4_uses_its_timestamps(tmp_path: Path) -> None:
    """An H.264 MP4 written here (PyAV): a dark block crosses from 2.0 s to 4.0 s."""
    import av

    path = tmp_path / "walk.mp4"
    scene = _Scene(seed=3, h=240, w=320)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(60):
            y = scene.frame(walker_x=None if not 20 <= i < 40 else (i - 20) * 16)
            frame = av.VideoFrame.from_ndarray(np.dstack([y, y, y]), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    proc = _cli(str(path))
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if "zone frame: motion" in line]
    assert [line.split(": motion ")[1][:4] for line in lines] == ["star", "ends"], proc.stdout
    start = float(lines[0].split(" s")[0])
    assert 1.9 <= start <= 2.4, lines
    assert f"; {start:.1f} s – " in lines[1]  # the end line carries the whole extent


# -- synthetic scenes -------------------------------------------------------------------------
class _Scene:
    """A textured wall with fresh sensor noise each frame and an optional dark walker."""

    def __init__(self, seed: int = 0, h: int = H, w: int = W) -> None:
        self.rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:h, 0:w]
        self.base = 110 + 45 * np.sin(xx / 9.0) * np.cos(yy / 7.0) + 20 * np.sin(yy / 23.0)
        self.h, self.w = h, w

    def frame(self, walker_x: int | None = None, gain: float = 1.0, offset: float = 0.0) -> U8:
        f = self.base * gain + offset + self.rng.normal(0, 3, self.base.shape)
        if walker_x is not None:
            top = self.h // 3
            f[top : top + self.h // 5, max(0, walker_x) : walker_x + self.w // 18] = 25 * gain
        return np.clip(f, 0, 255).astype(np.uint8)


def _run(det: MotionDetector, frames: list[U8], t0: float = 0.0) -> list[MotionEvent]:
    events = []
    for i, y in enumerate(frames):
        events += det.feed(y, t0 + i / FPS)
    return events


def _ended(events: list[MotionEvent], zone: str | None = None) -> list[MotionEvent]:
    return [e for e in events if e.end_s is not None and zone in (None, e.zone)]


def _motion(**kw: object) -> Motion:
    return Motion.model_validate(kw)


BAND = [[0, 0.25], [1, 0.25], [1, 0.6], [0, 0.6]]  # the walker's rows
BOTTOM = [[0, 0.75], [1, 0.75], [1, 1], [0, 1]]


def _walk(scene: _Scene, before: int = 20, steps: int = 60, after: int = 30) -> list[U8]:
    quiet = [scene.frame() for _ in range(before)]
    walking = [scene.frame(walker_x=i * W // steps) for i in range(steps)]
    return quiet + walking + [scene.frame() for _ in range(after)]


def test_walker_gives_one_event_in_its_zone_and_none_elsewhere() -> None:
    cfg = _motion(zones=[{"id": "band", "polygon": BAND}, {"id": "bottom", "polygon": BOTTOM}])
    det = MotionDetector(cfg, (H, W))
    events = _run(det, _walk(_Scene()))
    band = _ended(events, "band")
    assert len(band) == 1 and not _ended(events, "bottom"), events
    (e,) = band
    assert 20 <= e.start_frame <= 22 and e.end_frame is not None and 78 <= e.end_frame <= 80
    assert e.start_s == pytest.approx(e.start_frame / FPS) and e.action == "tag"
    assert e.peak_cells >= 2 and len(e.cells) > 10  # it crossed the whole width
    assert all(3 <= row <= 7 for _, row in e.cells), e.cells  # the walker's grid rows
    starts = [x for x in events if x.end_s is None]
    assert [x.zone for x in starts] == ["band"] and starts[0].start_frame == e.start_frame
    assert det.active == {}


def test_already_decimated_frames_give_the_same_events() -> None:
    cfg = _motion(zones=[{"id": "band", "polygon": BAND}])
    full, small = MotionDetector(cfg, (H, W)), MotionDetector(cfg, (H, W))
    frames = _walk(_Scene(seed=5))
    s = full.layout.stride
    assert s == 2
    assert _run(full, frames) == _run(small, [f[::s, ::s] for f in frames])


def test_lights_on_step_is_a_lighting_change_not_motion() -> None:
    """The step is reported and explained by the tone map: no event, and no hold-off either,
    so a walker right after the step is seen at once (detection used to be off for 2 s)."""
    scene = _Scene(seed=1)
    det = MotionDetector(_motion(), (H, W))
    events = _run(det, [scene.frame() for _ in range(20)])
    events += det.feed(scene.frame(offset=60), 2.0)
    stats = det.last_stats
    assert stats["lighting"] and not stats["relearnt"] and not stats["holdoff"]
    assert stats["changed_fraction"] > 0.9 and stats["residual_fraction"] < 0.05, stats
    events += _run(det, [scene.frame(offset=60) for _ in range(20)], t0=2.1)
    assert not any(s for s in (det.last_stats["lighting"], det.last_stats["holdoff"]))
    assert events == [], events
    # Still watching, straight away: a walker in the lit scene is seen from its first frame.
    walk = [scene.frame(walker_x=i * 12, offset=60) for i in range(20)]
    started = [e for e in _run(det, walk, t0=4.1) if e.end_s is None]
    assert [e.start_s for e in started] == [pytest.approx(4.1)], started


def test_dusk_fade_over_100_frames_gives_nothing() -> None:
    scene = _Scene(seed=2)
    det = MotionDetector(_motion(), (H, W))
    frames = [scene.frame() for _ in range(20)]
    frames += [scene.frame(gain=1.0 - 0.65 * i / 100) for i in range(100)]
    frames += [scene.frame(gain=0.35) for _ in range(20)]
    assert _run(det, frames) + det.flush(14.0) == []
    # Still watching at dusk: a (darker) walker is seen.
    walk = [scene.frame(walker_x=i * 12, gain=0.35) for i in range(20)]
    assert _ended(_run(det, walk, t0=14.0) + det.flush(16.0))


def test_black_and_white_do_not_wrap_around() -> None:
    """uint8 0 - 255 is 1: a black block on white (and the reverse) must still be motion."""
    zone = [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]]
    for ground, block in ((255, 0), (0, 255), (250, 3)):
        det = MotionDetector(_motion(zones=[{"id": "box", "polygon": zone}]), (H, W))
        plain = np.full((H, W), ground, np.uint8)
        marked = plain.copy()
        marked[150:210, 200:280] = block
        events = _run(det, [plain] * 10 + [marked] * 10)
        assert [(e.zone, e.start_frame) for e in events] == [("box", 10)], (ground, block)
        assert det.last_stats["cells_changed"]["box"] >= 2


def test_ignored_polygon_hides_the_walker() -> None:
    det = MotionDetector(_motion(ignore=[BAND]), (H, W))  # whole-frame zone, band ignored
    assert _run(det, _walk(_Scene(seed=4))) + det.flush(11.0) == []
    assert not det.layout.valid[H // 2 // 2, :].any()  # the band's rows are not analysed


def test_one_frame_flash_is_not_motion_but_three_frames_are() -> None:
    scene = _Scene(seed=6)
    det = MotionDetector(_motion(), (H, W))  # persistence_frames = 3
    frames = [scene.frame() for _ in range(10)]
    flash = scene.frame()
    flash[100:200, 100:250] = 255
    events = _run(det, [*frames, flash, *frames])
    assert events == [] and det.active == {}
    events = _run(det, [flash, flash, flash, *frames], t0=2.0)
    assert [e.end_s is None for e in events] == [True, False]


def test_someone_standing_still_is_absorbed_slowly_not_at_once() -> None:
    scene = _Scene(seed=7, h=180, w=240)  # stride 1: cheap frames for a long wait
    det = MotionDetector(_motion(), (180, 240))
    events = _run(det, [scene.frame() for _ in range(10)])
    still = [scene.frame(walker_x=100) for _ in range(150)]
    events += _run(det, still, t0=1.0)  # 15 s standing: at the full rate they would be gone
    assert [e.end_s for e in events] == [None] and "frame" in det.active
    for k in range(8):  # ... but a parked car does become background within two minutes
        events += _run(det, still, t0=16.0 + 15 * k)
    assert [e.end_s is None for e in events] == [True, False] and det.active == {}


def test_wrong_frames_are_refused() -> None:
    det = MotionDetector(_motion(), (H, W))
    with pytest.raises(MotionInputError, match="fits neither"):
        det.feed(np.zeros((100, 100), np.uint8), 0.0)
    with pytest.raises(ValueError, match="uint8"):
        det.feed(np.zeros((H, W), np.float32), 0.0)


def test_polygon_mask_is_even_odd_on_pixel_centres() -> None:
    ys, xs = np.mgrid[0:10, 0:10]
    u, v = (xs + 0.5) / 10, (ys + 0.5) / 10
    ell = [(0.0, 0.0), (0.6, 0.0), (0.6, 0.3), (0.3, 0.3), (0.3, 0.6), (0.0, 0.6)]
    inside = polygon_mask(ell, u, v)  # concave: 6x3 centres along the top, 3x3 down the left
    assert inside.sum() == 27 and inside[2, 5] and inside[5, 2] and not inside[5, 5]


# -- random frames ----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    frames=st.lists(arrays(np.uint8, (48, 64)), min_size=1, max_size=8),
    sensitivity=st.integers(1, 100),
    persistence=st.integers(1, 3),
)
def test_random_frames_never_crash_and_counts_stay_in_bounds(
    frames: list[U8], sensitivity: int, persistence: int
) -> None:
    zone = {
        "id": "left",
        "polygon": [[0, 0], [0.5, 0], [0.5, 1], [0, 1]],
        "sensitivity": sensitivity,
        "persistence_frames": persistence,
    }
    det = MotionDetector(_motion(zones=[zone], grid=(8, 6)), (48, 64))
    cells = int(det.layout.zones[0].cells.sum())
    assert 0 < cells <= 8 * 6
    events = _run(det, frames * 2) + det.flush(2.0)
    stats = det.last_stats
    assert 0.0 <= stats["changed_fraction"] <= 1.0
    assert 0 <= stats["cells_changed"]["left"] <= cells
    for e in events:
        assert 0 <= e.peak_cells <= cells and len(e.cells) <= cells
        assert all(0 <= c < 8 and 0 <= r < 6 for c, r in e.cells)
        assert e.end_frame is None or e.start_frame <= e.end_frame
