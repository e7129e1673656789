"""`edge run alarm|video|broker`: the long-running services (started by systemd on a box)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("run", help="run a service (alarm, video, broker)", parents=parents)
    parser.add_argument("service", choices=["alarm", "video", "broker"], help="which service")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("EDGE_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING (default INFO)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.service == "alarm":
        from edge.alarm.lean import without_openssl

        without_openssl()  # before anything imports asyncio, paho or hashlib
    from edge.config import load_config

    cfg = load_config(args.config)  # a ConfigError is reported by edge.cli (exit 78)
    if args.service == "broker":
        from edge import system

        system.setup_logging("edge-broker", args.log_level)
        return _broker(cfg)
    if args.service == "video":
        return _video(cfg, args.log_level)
    import asyncio

    from edge import system
    from edge.alarm.service import run_alarm

    system.setup_logging("edge-alarm", args.log_level)
    return asyncio.run(run_alarm(cfg))


def _video(cfg: Any, log_level: str) -> int:
    """edge-video: numpy and av are imported here only, never by edge-alarm."""
    import asyncio

    from edge.video.lean import prepare_process

    prepare_process()  # before edge.bus imports paho and threads start (edge/video/lean.py)
    from edge import system
    from edge.video.service import run_video

    system.setup_logging("edge-video", log_level)
    return asyncio.run(run_video(cfg))


def _broker(cfg: Any) -> int:
    from edge.uplink.broker import mosquitto_binary, write_config

    conf = write_config(cfg, Path(cfg.paths.run_dir) / "mosquitto.conf")
    binary = mosquitto_binary()
    os.execv(binary, [binary, "-c", str(conf)])
    return 0  # pragma: no cover - execv does not return
