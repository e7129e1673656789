"""How to look at and start a service on *this* machine, for the hint under an error.

A box runs edge-broker, edge-alarm and edge-video as systemd units, so a hint there names the
unit. The demo (`make demo`, `edge demo`) and a test bench have no systemd: the processes run
in a terminal, and a hint about `systemctl` would send a new user looking for a unit that does
not exist. The test is systemd's own (sd_booted(3)): ``/run/systemd/system`` exists only when
systemd is PID 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.config import SiteConfig

SYSTEMD_RUNTIME = Path("/run/systemd/system")
DEMO_SITE = Path(__file__).resolve().parent.parent / "hw-sim" / "sites" / "demo.toml"
DEMO_BUS_URL = "mqtt://127.0.0.1:18830"
# The `edge run` sub-command behind each unit.
RUNS = {"edge-broker": "broker", "edge-alarm": "alarm", "edge-video": "video"}


def systemd_running(runtime: Path = SYSTEMD_RUNTIME) -> bool:
    """True when systemd manages this machine (sd_booted: its runtime directory exists)."""
    return runtime.is_dir()


def is_demo(cfg: SiteConfig | None, config_path: str | os.PathLike[str] | None) -> bool:
    """The demo site: its file, or a site on the demo's broker address."""
    if config_path is not None:
        try:
            if Path(config_path).resolve() == DEMO_SITE:
                return True
        except OSError:
            pass
    return cfg is not None and cfg.bus.url == DEMO_BUS_URL


def how_to_start(
    unit: str,
    cfg: SiteConfig | None = None,
    config_path: str | os.PathLike[str] | None = None,
    *,
    runtime: Path = SYSTEMD_RUNTIME,
) -> str:
    """One sentence: where ``unit`` (edge-broker, edge-alarm, edge-video) runs here and how to
    see why it is not running, or start it."""
    if systemd_running(runtime):
        return (
            f"`systemctl status {unit}` says why; start it with `sudo systemctl start {unit}` "
            f"(its log: `journalctl -u {unit} -n 50`)"
        )
    run = RUNS.get(unit, unit)
    where = f" --config {config_path}" if config_path else ""
    if is_demo(cfg, config_path):
        return (
            f"this is the demo, without systemd: {unit} runs inside `make demo` (or "
            f"`edge demo`); start it in another terminal and leave it running"
        )
    return (
        f"this machine has no systemd (PID 1 is {_pid1()}), so there is no {unit} unit: "
        f"start it in a terminal with `edge run {run}{where}`, or run `edge demo{where}`"
    )


def _pid1() -> str:
    """The name of PID 1, for the hint (a container's init, a shell, ...)."""
    try:
        return Path("/proc/1/comm").read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"
