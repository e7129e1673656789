"""Start → READY=1 time and resident memory of `edge run alarm`.

Reference in the same run: a bare `python -c pass` start and its RSS, so the figures can be
compared across machines. Last line: one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import NotifySocket, median, rss_mb, start_alarm, start_mosquitto, stop, write_site

RUNS = 5
SETTLE_S = 2.0


def one_start(root: Path, url: str, i: int) -> tuple[float, float]:
    work = root / f"run{i}"
    work.mkdir()
    site = write_site(work, url)
    notify = NotifySocket(work / "notify.sock")
    t0 = time.monotonic()
    proc = start_alarm(site, work, notify)
    try:
        ready = notify.wait_for("READY=1", timeout=10) - t0
        time.sleep(SETTLE_S)
        rss = rss_mb(proc.pid)
        USS.append(private_mb(proc.pid))
    finally:
        stop(proc)
        notify.close()
    return ready, rss


USS: list[float] = []


def private_mb(pid: int) -> float:
    """Memory only this process holds (USS): RSS minus pages shared with other processes,
    such as libpython and pydantic-core that edge-video maps too."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def baseline() -> tuple[float, float]:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    start = time.monotonic() - t0
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    time.sleep(1.0)
    rss = rss_mb(proc.pid)
    proc.kill()
    proc.wait()
    return start, rss


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # The box default: services reach the broker on its unix socket (bus.url).
        broker = start_mosquitto(root / "broker", unix=True)
        try:
            results = [one_start(root, broker.url, i) for i in range(RUNS)]
        finally:
            broker.stop()
    base_s, base_rss = baseline()
    readies = [r for r, _ in results]
    rsses = [m for _, m in results]
    for i, (r, m) in enumerate(results):
        print(f"run {i}: READY after {r * 1000:.0f} ms, RSS {m:.1f} MB", file=sys.stderr)
    out = {
        "bench": "alarm_startup",
        "ready_s": round(median(readies), 3),
        "ready_max_s": round(max(readies), 3),
        "rss_mb": round(max(rsses), 1),
        "uss_mb": round(max(USS), 1),
        "python_start_s": round(base_s, 3),
        "python_rss_mb": round(base_rss, 1),
        "ready_ratio_to_python": round(median(readies) / base_s, 1),
        "runs": RUNS,
        "targets": {"ready_s": 1.0, "rss_mb": 40},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
