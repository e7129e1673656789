"""`edge motion FILE`: run the motion pre-analysis on a recording, to tune a camera's zones.

An installer records a minute of the scene (or takes the camera's own export), walks through
the zones, and checks here which zones saw motion and when, before trusting the camera with
an alarm zone. The same detector and configuration as edge-video are used; only the frames
come from a file. Frame times come from the file's timestamps, except for AVI, which stores
none (only frame order), so its times are frame index / frame rate.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import (
    EX_CONFIG,
    EX_DATAERR,
    EX_NOINPUT,
    EX_OK,
    EX_USAGE,
    CommandError,
    ConfigError,
)

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from edge.config.video import Motion
    from edge.video.motion import MotionDetector, MotionEvent

PLANAR_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
DEFAULT_FPS = 25.0


class InputFileError(CommandError):
    """The recording is missing, not a video, or cannot be decoded."""


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "motion",
        parents=parents,
        help="run the motion analysis on a video file (zone tuning)",
        description="Decode FILE, run the camera's motion analysis and list motion events. "
        "Without --config: default settings and one whole-frame zone.",
    )
    parser.add_argument("file", metavar="FILE", help="a recording (mp4, mkv, avi, h264 ...)")
    parser.add_argument(
        "--camera", metavar="ID", help="use this camera's [video] motion settings and zones"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--sensitivity",
        type=_bounded(1, 100),
        metavar="N",
        help="override every zone's sensitivity (1-100, default from the config or 50)",
    )
    parser.add_argument(
        "--stride-rows",
        type=_bounded(90, 360),
        metavar="N",
        help="target rows of the analysis frame (90-360, default 176)",
    )
    parser.set_defaults(func=run)


def _bounded(low: int, high: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number {low}-{high}, got {text!r}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    try:
        motion, camera = _motion_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except CommandError as exc:
        print(f"edge motion: {exc}", file=sys.stderr)
        return EX_USAGE
    if not motion.enabled:
        print(f"note: motion is disabled for camera {camera}; analysing anyway", file=sys.stderr)
    try:
        return _analyse(Path(args.file), motion, camera, args.json)
    except InputFileError as exc:
        print(f"edge motion: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except BrokenPipeError:  # `edge motion x.mp4 | head`: the reader left
        return EX_OK


def _motion_config(args: argparse.Namespace) -> tuple[Motion, str]:
    """The camera's motion settings (or defaults), with the command-line overrides applied."""
    from pydantic import ValidationError

    from edge.config.video import Motion

    camera = "(defaults)"
    motion = Motion()
    if args.camera or args.config:
        from edge.config import load_config

        cfg = load_config(args.config)
        cameras = {c.id: c for c in cfg.video.cameras}
        if args.camera is None and len(cameras) != 1:
            raise CommandError(
                f"say which camera with --camera ID; cameras: {', '.join(cameras) or '(none)'}"
            )
        camera = args.camera or next(iter(cameras))
        if camera not in cameras:
            raise CommandError(
                f"no camera {camera!r} in {args.config or 'the configuration'}; "
                f"cameras: {', '.join(cameras) or '(none)'}"
            )
        motion = cameras[camera].motion
    data = motion.model_dump()
    if args.sensitivity is not None:
        for zone in data["zones"]:
            zone["sensitivity"] = args.sensitivity
        if not data["zones"]:
            data["zones"] = [_whole_frame(args.sensitivity)]
    if args.stride_rows is not None:
        data["analysis_rows"] = args.stride_rows
    try:
        return Motion.model_validate(data), camera
    except ValidationError as exc:  # pragma: no cover - the options are range-checked above
        raise CommandError(f"invalid motion settings: {exc}") from exc


def _whole_frame(sensitivity: int) -> dict[str, Any]:
    from edge.video.motion_zones import whole_frame_zone

    return whole_frame_zone().model_copy(update={"sensitivity": sensitivity}).model_dump()


def _frames(path: Path) -> Iterator[tuple[int, float, npt.NDArray[np.uint8]]]:
    """(index, seconds, luma) for every frame; the Y plane as encoded, no colour conversion."""
    import av
    import numpy as np

    if not path.is_file():
        raise InputFileError(f"{path}: no such file (give the path of a video recording)")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputFileError(f"{path}: not a video file FFmpeg can read ({exc})") from exc
    with container:
        if not container.streams.video:
            raise InputFileError(f"{path}: the file has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else DEFAULT_FPS
        by_index = "avi" in container.format.name
        for index, frame in enumerate(container.decode(stream)):
            if frame.format.name in PLANAR_YUV:
                plane = frame.planes[0]
                rows = np.frombuffer(memoryview(plane), np.uint8).reshape(
                    plane.height, plane.line_size
                )
                y = rows[:, : plane.width]
            else:
                y = np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)
            seconds = index / fps if by_index or frame.time is None else float(frame.time)
            yield index, seconds, y


def _analyse(path: Path, motion: Motion, camera: str, as_json: bool) -> int:
    import av

    from edge.video.motion import MotionDetector

    detector: MotionDetector | None = None
    report = _Report(as_json)
    frames = _frames(path)
    last_t, shape = 0.0, (0, 0)
    try:
        for index, t_s, y in frames:
            if detector is None:
                shape = (y.shape[0], y.shape[1])
                detector = MotionDetector(motion, shape)
            for event in detector.feed(y, t_s):
                report.event(event)
            if detector.last_stats["lighting"]:
                report.lighting(index, t_s, motion.lighting_holdoff_s)
            last_t = t_s
    except av.FFmpegError as exc:
        if detector is None:
            raise InputFileError(f"{path}: cannot decode the video ({exc})") from exc
        print(f"edge motion: decoding stopped at {last_t:.1f} s: {exc}", file=sys.stderr)
        report.damaged = True
    if detector is None:
        raise InputFileError(f"{path}: the video stream has no frames")
    for event in detector.flush(last_t):
        report.event(event)
    report.summary(path, camera, shape, detector, last_t)
    return EX_DATAERR if report.damaged else EX_OK


class _Report:
    """Prints ended events as they come (a long file shows progress) and a summary."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.events: list[MotionEvent] = []
        self.lighting_changes = 0
        self.damaged = False

    def _emit(self, obj: dict[str, Any], text: str) -> None:
        print(json.dumps(obj, ensure_ascii=False) if self.as_json else text, flush=True)

    def event(self, event: MotionEvent) -> None:
        if event.end_s is None:
            return  # printed once it ends, with its whole extent
        self.events.append(event)
        action = " (alarm)" if event.action == "alarm" else ""
        self._emit(
            {"type": "motion", **_event_dict(event)},
            f"{event.start_s:.1f} s – {event.end_s:.1f} s (frames {event.start_frame}–"
            f"{event.end_frame}) zone {event.zone}: motion{action}, peak {event.peak_cells} "
            f"cells",
        )

    def lighting(self, index: int, t_s: float, holdoff_s: float) -> None:
        self.lighting_changes += 1
        self._emit(
            {"type": "lighting", "t_s": round(t_s, 3), "frame": index},
            f"{t_s:.1f} s (frame {index}) lighting change: background relearnt, "
            f"detection held off {holdoff_s:g} s",
        )

    def summary(
        self,
        path: Path,
        camera: str,
        shape: tuple[int, int],
        detector: MotionDetector,
        last_t: float,
    ) -> None:
        layout = detector.layout
        frames = detector.last_stats["frame"] + 1
        zones: dict[str, dict[str, Any]] = {
            z.id: {"action": z.action, "cells": int(z.cells.sum()), "events": 0, "motion_s": 0.0}
            for z in layout.zones
        }
        for e in self.events:
            zones[e.zone]["events"] += 1
            zones[e.zone]["motion_s"] = round(
                zones[e.zone]["motion_s"] + (e.end_s or e.start_s) - e.start_s, 3
            )
        obj = {
            "type": "summary",
            "file": str(path),
            "camera": camera,
            "frames": frames,
            "duration_s": round(last_t, 3),
            "resolution": [shape[1], shape[0]],
            "analysis": [layout.shape[1], layout.shape[0]],
            "stride": layout.stride,
            "events": len(self.events),
            "lighting_changes": self.lighting_changes,
            "zones": zones,
        }
        lines = [
            f"{path.name}: {frames} frames, {last_t:.1f} s at {shape[1]}x{shape[0]} "
            f"(analysed at {layout.shape[1]}x{layout.shape[0]}, stride {layout.stride}), "
            f"camera {camera}",
            f"{len(self.events)} motion event(s), {self.lighting_changes} lighting change(s)",
        ]
        lines += [
            f"  zone {zid} ({z['action']}, {z['cells']} cells): {z['events']} event(s), "
            f"{z['motion_s']:.1f} s of motion"
            for zid, z in zones.items()
        ]
        self._emit(obj, "\n".join(lines))


def _event_dict(event: MotionEvent) -> dict[str, Any]:
    return {
        "zone": event.zone,
        "action": event.action,
        "start_s": round(event.start_s, 3),
        "end_s": None if event.end_s is None else round(event.end_s, 3),
        "start_frame": event.start_frame,
        "end_frame": event.end_frame,
        "peak_cells": event.peak_cells,
        "cells": [list(c) for c in event.cells],
    }
