"""The box itself: data disk, memory, load, temperature and power, clock, versions."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from edge import __version__
from edge.diag.model import Finding, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources

MB = 1024 * 1024
DISK_WARN = (0.10, 500 * MB)  # free fraction, free bytes: below either → warn
DISK_FAIL = (0.03, 50 * MB)
MEM_WARN, MEM_FAIL = 0.10, 0.05  # available fraction
LOAD_WARN, LOAD_FAIL = 2.0, 4.0  # 5-minute load per core
TEMP_WARN_C, TEMP_FAIL_C = 75.0, 82.0  # a Pi throttles at 80-85 °C
THERMAL = Path("/sys/class/thermal")
TOOL_S = 0.3  # time a helper program may take
EPOCH_SANE = 1_700_000_000  # 2023-11: a clock before this was never set


@check("system.disk", holdoff_s=60, about="free space on the data disk (journal, outbox, clips)")
def disk(src: Sources) -> list[Finding]:
    path = Path(src.cfg.paths.data_dir)
    try:
        st = os.statvfs(path if path.exists() else path.parent)
    except OSError as exc:
        return [unknown("system.disk", f"cannot examine {path}: {exc.strerror}")]
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    frac = free / total if total else 0.0
    ev = {"free_mb": round(free / MB, 1), "total_mb": round(total / MB, 1), "path": str(path)}
    words = f"data disk {frac:.0%} free ({free / MB:.0f} MB of {total / MB:.0f} MB)"
    remedy = (
        f"find what fills {path} (`du -sh {path}/*`); clips are usually the largest: lower "
        "video.clips retention or the clip quota, or export and delete old clips"
    )
    if frac < DISK_FAIL[0] or free < DISK_FAIL[1]:
        return [fail("system.disk", words, remedy, evidence=ev, arming=True)]
    if frac < DISK_WARN[0] or free < DISK_WARN[1]:
        return [warn("system.disk", words, remedy, evidence=ev)]
    return [ok("system.disk", words, evidence=ev)]


@check("system.memory", holdoff_s=120, about="memory available to the services")
def memory(src: Sources) -> list[Finding]:
    info = _meminfo()
    if "MemTotal" not in info or "MemAvailable" not in info:
        return [unknown("system.memory", "/proc/meminfo gives no MemAvailable")]
    frac = info["MemAvailable"] / info["MemTotal"]
    ev = {"available_mb": info["MemAvailable"] // 1024, "total_mb": info["MemTotal"] // 1024}
    words = f"{frac:.0%} of memory available ({ev['available_mb']} MB)"
    remedy = (
        "see which process grows (`systemctl status edge-alarm edge-video edge-broker`, "
        "`ps aux --sort=-rss | head`); restart edge-video if it is the one, and report it"
    )
    if frac < MEM_FAIL:
        return [fail("system.memory", words, remedy, evidence=ev)]
    if frac < MEM_WARN:
        return [warn("system.memory", words, remedy, evidence=ev)]
    return [ok("system.memory", words, evidence=ev)]


@check("system.load", holdoff_s=300, about="CPU load against the number of cores")
def load(src: Sources) -> list[Finding]:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return [unknown("system.load", "the load average is not available")]
    cores = os.cpu_count() or 1
    per_core = five / cores
    ev = {"load_1m": round(one, 2), "load_5m": round(five, 2), "cores": cores}
    words = f"load {five:.1f} over 5 min on {cores} core(s)"
    remedy = (
        "too much video work for this box: lower a camera's resolution or fps, or move "
        "motion analysis to fewer cameras; `top` shows which process"
    )
    if per_core > LOAD_FAIL:
        return [fail("system.load", words, remedy, evidence=ev)]
    if per_core > LOAD_WARN:
        return [warn("system.load", words, remedy, evidence=ev)]
    return [ok("system.load", words, evidence=ev)]


@check("system.power", holdoff_s=30, about="CPU temperature, throttling, under-voltage (Pi)")
def power(src: Sources) -> list[Finding]:
    found = [_temperature()]
    throttled = _throttled()
    if throttled is not None:
        found.append(throttled)
    return found


@check("system.clock", holdoff_s=300, about="clock synchronisation (timesyncd / chrony)")
def clock(src: Sources) -> list[Finding]:
    now = time.time()
    if now < EPOCH_SANE:
        return [
            fail(
                "system.clock",
                f"the clock reads {time.strftime('%Y-%m-%d', time.gmtime(now))}: it was never "
                "set, so every event carries a wrong time",
                "give the box a time source: check its network and `timedatectl`",
                arming=True,
            )
        ]
    synced = _ntp_synchronised()
    if synced is None:
        return [unknown("system.clock", "no time synchronisation service answers here")]
    if not synced:
        return [
            warn(
                "system.clock",
                "the clock is not synchronised: event times may drift",
                "check `timedatectl timesync-status` (or `chronyc tracking`) and that the box "
                "reaches its NTP servers (UDP 123)",
            )
        ]
    return [ok("system.clock", "the clock is synchronised")]


@check("system.versions", holdoff_s=0, about="software versions")
def versions(src: Sources) -> list[Finding]:
    ev = {"edge": __version__}
    if src.alarm and src.alarm.get("version") not in (None, __version__):
        return [
            warn(
                "system.versions",
                f"edge-alarm runs {src.alarm['version']}, the installed one is {__version__}",
                "restart the services after an update: `systemctl restart edge-alarm edge-video`",
                evidence={**ev, "edge_alarm": src.alarm["version"]},
            )
        ]
    return [ok("system.versions", f"edge {__version__}", evidence=ev)]


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            out[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def _temperature() -> Finding:
    temps = []
    for zone in sorted(THERMAL.glob("thermal_zone*/temp")):
        try:
            temps.append(int(zone.read_text().strip()) / 1000)
        except (OSError, ValueError):
            continue
    if not temps:
        return unknown("system.power", "no CPU temperature sensor here (not a Pi?)")
    top = max(temps)
    ev = {"cpu_c": round(top, 1)}
    words = f"CPU at {top:.0f} °C"
    remedy = "the box is too hot: check its ventilation and heat sink, and the cabinet's"
    if top >= TEMP_FAIL_C:
        return fail("system.power", words, remedy, evidence=ev)
    if top >= TEMP_WARN_C:
        return warn("system.power", words, remedy, evidence=ev)
    return ok("system.power", words, evidence=ev)


def _throttled() -> Finding | None:
    """`vcgencmd get_throttled` on a Pi (None elsewhere): bit 0 under-voltage now, bit 2
    throttled now, bit 16 under-voltage has occurred since boot."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "get_throttled"], capture_output=True, text=True, timeout=TOOL_S, check=False
        ).stdout
        bits = int(out.strip().split("=", 1)[1], 16)
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return unknown("system.power", "vcgencmd get_throttled gives no answer", scope="supply")
    ev = {"throttled": hex(bits)}
    remedy = "use the official power supply (5.1 V, 3 A or more) and a short, thick cable"
    if bits & 0x1:
        return fail("system.power", "under-voltage now", remedy, evidence=ev, scope="supply")
    if bits & 0x4:
        return warn("system.power", "CPU throttled now", remedy, evidence=ev, scope="supply")
    if bits & 0x10000:
        return warn("system.power", "under-voltage since boot", remedy, evidence=ev, scope="supply")
    return ok("system.power", "power supply steady", evidence=ev, scope="supply")


def _ntp_synchronised() -> bool | None:
    exe = shutil.which("timedatectl")
    if exe is not None:
        try:
            out = subprocess.run(
                [exe, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=TOOL_S,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
                return out.stdout.strip() == "yes"
        except (OSError, subprocess.TimeoutExpired):
            pass
    exe = shutil.which("chronyc")
    if exe is not None:
        try:
            out = subprocess.run(
                [exe, "-n", "tracking"], capture_output=True, text=True, timeout=TOOL_S
            )
            if out.returncode == 0:
                return "Not synchronised" not in out.stdout
        except (OSError, subprocess.TimeoutExpired):
            pass
    return None
