"""Resident memory of the demo site's `edge run alarm` over a long run (simulated hardware).

The demo site polls three ADC loops every 20 ms through gpiozero's bit-banged mock SPI: each
read toggles the mock pins dozens of times, and gpiozero's MockPin records every change in a
list that grows for ever (≈52 MB a minute here before the simulator bounded it). This runs
the demo site as it ships (hw-sim/sites/demo.toml, only its paths, bus address and identities
moved into a temporary directory) against a generated, authenticated box broker, waits for
the memory to settle, then watches RSS for SOAK_S seconds.

Reference in the same run: the RSS at the start of the window (growth is relative to it).
Last line: one JSON object; target rss_growth_mb ≤ 2.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, NotifySocket, rss_mb, start_alarm, stop
from support.central import start_box

from edge.config.central import CentralConfig

DEMO = REPO / "hw-sim" / "sites" / "demo.toml"
SITE_ID = "demo-site"
WARMUP_S = 10.0
SOAK_S = 120.0
SAMPLE_S = 10.0
TARGET_MB = 2.0


def demo_site(work: Path, url: str, identities: Path) -> Path:
    """The demo site file with its writable paths, bus and identities in ``work``."""
    text = DEMO.read_text(encoding="utf-8")
    swaps = {
        r"^data_dir = .*$": f'data_dir = "{work / "data"}"',
        r"^run_dir = .*$": f'run_dir = "{work / "run"}"',
        r'^url = "mqtt://.*$': f'url = "{url}"',
        r"^identities_dir = .*$": f'identities_dir = "{identities}"',
        r"^credentials_file = .*$": f'credentials_file = "{work / "web-users"}"',
    }
    for pattern, line in swaps.items():
        text, n = re.subn(pattern, line.replace("\\", "\\\\"), text, count=1, flags=re.M)
        if n != 1:
            raise SystemExit(f"{DEMO}: no line matches {pattern!r}: update bench/alarm_soak.py")
    (work / "run").mkdir(parents=True, exist_ok=True)
    path = work / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


def soak(work: Path) -> tuple[float, float, list[float]]:
    # A box without a central station: the bridge is off, the broker still authenticates.
    logging.getLogger("edge.uplink.bridge").setLevel(logging.CRITICAL)
    central = CentralConfig(host="central.invalid", enabled=False, secrets_dir=str(work))
    box = start_box(work / "box", SITE_ID, central)
    assert box.identities is not None
    notify = NotifySocket(work / "notify.sock")
    proc = None
    try:
        site = demo_site(work / "alarm", box.url, box.identities)
        proc = start_alarm(site, work / "alarm", notify)
        notify.wait_for("READY=1", timeout=15)
        time.sleep(WARMUP_S)
        samples = [rss_mb(proc.pid)]
        t0 = time.monotonic()
        while (left := SOAK_S - (time.monotonic() - t0)) > 0:
            time.sleep(min(SAMPLE_S, left))
            if proc.poll() is not None:
                raise SystemExit(f"edge-alarm exited with {proc.returncode}: see {work}/alarm")
            samples.append(rss_mb(proc.pid))
            print(f"t={time.monotonic() - t0:5.0f} s RSS {samples[-1]:.1f} MB", file=sys.stderr)
        return samples[0], samples[-1], samples
    finally:
        if proc is not None:
            stop(proc)
        notify.close()
        box.stop()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="edge-soak-") as tmp:
        start, end, samples = soak(Path(tmp))
    growth = end - start
    out = {
        "bench": "alarm_soak",
        "rss_growth_mb": round(growth, 1),
        "rss_start_mb": round(start, 1),
        "rss_end_mb": round(end, 1),
        "rss_peak_mb": round(max(samples), 1),
        "growth_mb_per_min": round(growth / SOAK_S * 60, 2),
        "soak_s": SOAK_S,
        "targets": {"rss_growth_mb": TARGET_MB},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
