"""`edge motion FILE`: run the motion pre-analysis on a recording, to tune a camera's zones.

An installer records a minute of the scene (or takes the camera's own export), walks through
the zones, and checks here which zones saw motion and when, before trusting the camera with
an alarm zone. The same detector and configuration as edge-video are used; only the frames
come from a file. Frame times come from the file's timestamps, except for AVI, which stores
none (only frame order), so its times are frame index / frame rate.

What is printed, and in which order, is edge.video.motion_report's business: a log in frame
time order, an event cut by the end of the file marked open.
"""

from __future__ import annotations

import argparse
import os
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
    from edge.video.motion import MotionDetector
    from edge.video.motion_report import MotionReport

PLANAR_YUV = {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"}
DEFAULT_FPS = 25.0


class InputFileError(CommandError):
    """The recording is missing, not a video, or cannot be decoded."""


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "motion",
        parents=parents,
        help="run the motion analysis on a video file (zone tuning)",
        description="Decode FILE, run the camera's motion analysis and list motion events "
        "and lighting changes in time order. Settings come from --config, else $EDGE_CONFIG, "
        "else /etc/edge/site.toml when --camera is given; with none of these, default "
        "settings and one whole-frame zone.",
    )
    parser.add_argument("file", metavar="FILE", help="a recording (mp4, mkv, avi, h264 ...)")
    parser.add_argument(
        "--camera", metavar="ID", help="use this camera's [video] motion settings and zones"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also one line per frame: changed share before and after the lighting "
        "correction, and changed cells per zone",
    )
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
    from edge.video.motion_report import MotionReport

    report = MotionReport(args.json, args.verbose, motion.lighting_holdoff_s)
    try:
        return _analyse(Path(args.file), motion, camera, report)
    except InputFileError as exc:
        print(f"edge motion: {exc}", file=sys.stderr)
        return EX_NOINPUT
    except BrokenPipeError:  # `edge motion x.mp4 | head`: the reader left
        return EX_OK


def _config_path(args: argparse.Namespace) -> str | None:
    """--config, else $EDGE_CONFIG, else the box's site file when a camera is named."""
    from edge.config.load import DEFAULT_PATH

    path: str | None = args.config or os.environ.get("EDGE_CONFIG") or None
    if path is None and args.camera:
        path = DEFAULT_PATH
    return path


def _motion_config(args: argparse.Namespace) -> tuple[Motion, str]:
    """The camera's motion settings (or defaults), with the command-line overrides applied."""
    from pydantic import ValidationError

    from edge.config.video import Motion

    camera = "(defaults)"
    motion = Motion()
    path = _config_path(args)
    if path is not None:
        from edge.config import load_config

        cfg = load_config(path)
        cameras = {c.id: c for c in cfg.video.cameras}
        if args.camera is None and len(cameras) != 1:
            raise CommandError(
                f"say which camera of {path} with --camera ID; "
                f"cameras: {', '.join(cameras) or '(none)'}"
            )
        camera = args.camera or next(iter(cameras))
        if camera not in cameras:
            raise CommandError(
                f"no camera {camera!r} in {path}; cameras: {', '.join(cameras) or '(none)'}"
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


def _analyse(path: Path, motion: Motion, camera: str, report: MotionReport) -> int:
    import av

    from edge.video.motion import MotionDetector

    detector: MotionDetector | None = None
    last_t, shape = 0.0, (0, 0)
    try:
        for index, t_s, y in _frames(path):
            if detector is None:
                shape = (y.shape[0], y.shape[1])
                detector = MotionDetector(motion, shape)
            events = detector.feed(y, t_s)
            report.frame(index, detector.last_stats)
            for event in events:
                report.event(event)
            report.release(detector.horizon_s(t_s))
            last_t = t_s
    except av.FFmpegError as exc:
        if detector is None:
            raise InputFileError(f"{path}: cannot decode the video ({exc})") from exc
        print(f"edge motion: decoding stopped at {last_t:.1f} s: {exc}", file=sys.stderr)
        report.damaged = True
    if detector is None:
        raise InputFileError(f"{path}: the video stream has no frames")
    for event in detector.active.values():  # cut by the end of the file: open, not ended
        report.still_open(event, last_t)
    report.release(float("inf"))
    report.summary(path, camera, shape, detector, last_t)
    return EX_DATAERR if report.damaged else EX_OK
