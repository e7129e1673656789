"""`edge motion FILE` as an installer uses it: time-ordered output, open events at the end of the
file, --verbose, $EDGE_CONFIG, and a lighting change in a real recording.

Footage: the PETS 2009 campus clip (ground truth in tests/test_motion.py: people on the
footpath throughout, so its event is cut by the end of the file; the lawn empty until 50.3 s).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.video.sources.scenes import ir_switch_table

REPO = Path(__file__).resolve().parents[1]
PETS = Path(__file__).resolve().parents[2] / "shared/data/pets2009-campus-480x360.avi"
pytestmark = pytest.mark.skipif(
    not PETS.exists(),
    reason=f"the shared PETS 2009 footage {PETS} is not on this machine (never copied here)",
)
LEADING_TIME = re.compile(r"^(\d+\.\d) s ")


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
polygon = [[0, 0.55], [1, 0.95], [1, 1], [0, 1]]

[[video.cameras.motion.zones]]
id = "footpath"
polygon = [[0, 0.2], [1, 0.45], [1, 0.7], [0, 0.4]]
""",
        encoding="utf-8",
    )
    return site


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "EDGE_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", "motion", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**base, **(env or {})},
    )


def _log_lines(stdout: str) -> list[str]:
    """The time-stamped lines (the summary at the end has none)."""
    return [line for line in stdout.splitlines() if LEADING_TIME.match(line)]


def test_an_event_cut_by_the_end_of_the_file_is_open_not_ended() -> None:
    proc = _cli(str(PETS))
    assert proc.returncode == 0, proc.stderr
    lines = _log_lines(proc.stdout)
    assert lines[0].startswith("0.1 s (frame 1) zone frame: motion starts")
    assert lines[-1].startswith("79.4 s (end of file) zone frame: motion still under way, open;")
    assert not any("motion ends" in line for line in lines), "it was never seen to stop"
    assert "1 motion event(s) (1 still open at the end of the file)" in proc.stdout

    proc = _cli(str(PETS), "--json")
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    (event,) = [o for o in objs if o["type"] == "motion"]
    assert event["open"] is True and event["end_s"] is None and event["end_frame"] is None
    assert event["start_s"] == 0.1 and event["last_s"] == 79.4 and event["last_frame"] == 794
    summary = objs[-1]
    assert summary["open_events"] == 1 and summary["zones"]["frame"]["open"] == 1


def test_text_is_in_time_order_with_the_config_from_edge_config(tmp_path: Path) -> None:
    """$EDGE_CONFIG names the site file (no --config): its camera's zones are used. The
    footpath's start (0.1 s) comes before the lawn's events, its open end last."""
    proc = _cli(str(PETS), env={"EDGE_CONFIG": str(_site(tmp_path))})
    assert proc.returncode == 0, proc.stderr
    lines = _log_lines(proc.stdout)
    times = [float(LEADING_TIME.match(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert times == sorted(times), proc.stdout
    assert lines[0].startswith("0.1 s (frame 1) zone footpath: motion starts")
    grass = [line for line in lines if "zone grass:" in line]
    assert grass and float(grass[0].split(" s ")[0]) >= 49.0 and "(alarm)" in grass[0], grass
    assert "motion ends (alarm);" in grass[-1]
    assert "zone footpath: motion still under way, open" in lines[-1]
    assert "camera campus" in proc.stdout


def test_edge_config_naming_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.toml"
    proc = _cli(str(PETS), env={"EDGE_CONFIG": str(missing)})
    assert proc.returncode == 78
    assert str(missing) in proc.stderr and "file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    # --config wins over $EDGE_CONFIG.
    proc = _cli(str(PETS), "--config", str(_site(tmp_path)), env={"EDGE_CONFIG": str(missing)})
    assert proc.returncode == 0, proc.stderr


def test_verbose_prints_every_frame_in_order() -> None:
    proc = _cli(str(PETS), "--verbose", "--stride-rows", "120")
    assert proc.returncode == 0, proc.stderr
    frames = [line for line in proc.stdout.splitlines() if " changed " in line]
    assert len(frames) == 795
    assert frames[0].startswith("0.0 s (frame 0) changed 0.0%, 0.0% after lighting")
    assert all(f"(frame {i}) " in line for i, line in enumerate(frames))
    assert all("cells frame " in line for line in frames)
    lines = _log_lines(proc.stdout)
    start = lines.index(next(line for line in lines if "motion starts" in line))
    assert "(frame 1) changed" in lines[start - 1], "a start comes after its frame's line"

    proc = _cli(str(PETS), "--verbose", "--json", "--stride-rows", "120")
    objs = [json.loads(line) for line in proc.stdout.splitlines()]
    frame_objs = [o for o in objs if o["type"] == "frame"]
    assert [o["frame"] for o in frame_objs] == list(range(795))
    assert {"changed_fraction", "residual_fraction", "tone_shift", "cells_changed"} <= set(
        frame_objs[0]
    )


def test_ir_switch_in_a_real_recording_is_one_lighting_line_and_no_lawn_event(
    tmp_path: Path,
) -> None:
    """The first 30 s of the campus clip with an IR switch at 15.0 s, written as H.264 MP4
    (its own timestamps): reported once as an explained lighting change, no motion on the
    still lawn, the footpath's event runs through it."""
    import av

    path = tmp_path / "campus-ir.mp4"
    with av.open(str(PETS)) as src, av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        table = None
        for i, frame in enumerate(src.decode(src.streams.video[0])):
            if i == 300:
                break
            img = frame.to_ndarray(format="yuv420p")
            if i >= 150:
                if table is None:
                    table = ir_switch_table(np.bincount(img[:360].ravel(), minlength=256))
                img[:360] = table[img[:360]]
                img[360:] = 128  # grey
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="yuv420p")))
        out.mux(stream.encode(None))
    proc = _cli(str(path), "--config", str(_site(tmp_path)), "--camera", "campus")
    assert proc.returncode == 0, proc.stderr
    lines = _log_lines(proc.stdout)
    lighting = [line for line in lines if "lighting change" in line]
    assert len(lighting) == 1 and lighting[0].startswith("15.0 s (frame 150)"), lines
    assert "explained by a global brightness/contrast change" in lighting[0]
    assert not any("zone grass" in line for line in lines), lines
    assert [line.split(": motion ")[1][:5] for line in lines if "footpath" in line] == [
        "start",
        "still",
    ]
