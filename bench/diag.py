"""Diagnostics: how long a maintainer waits for an answer, on the box and from the station.

1. Local: `edge demo` runs hw-sim/sites/demo.toml (edge-alarm, edge-video, the box broker);
   once edge-alarm has published its first report, `edge diag --json` is run ``--runs``
   times as a maintainer would (a new process each time). Figure: the median wall time
   (target ≤ 1 s), with the slowest.
2. Remote: a site wired to a central mosquitto (TLS bridge, tests/support/site.py) and a
   console that signs commands; a signed ``cmd/diag`` is published centrally and timed until
   its report (same nonce) arrives on ``sites/<id>/diag``: through the bridge, edge-alarm's
   command channel, a fresh run of every check, and the bridge back. Figure: the median
   round trip (target ≤ 2 s), with the slowest, and how long edge-alarm's run of the checks
   took inside it (``alarm_checks_s``, median: the cost of each periodic run too).

Progress goes to stderr; the last line is one JSON object:
``{"bench":"diag","local_s":…,"remote_s":…}``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.site import SITE, Site  # noqa: E402
from test_demo import demo_site  # noqa: E402

EDGE = str(Path(sys.executable).with_name("edge"))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def local(tmp: Path, runs: int) -> list[float]:
    tmp.mkdir(parents=True)
    site = demo_site(tmp)
    log_path = tmp / "demo.log"
    with open(log_path, "w+") as log:
        proc = subprocess.Popen(
            [EDGE, "demo", "--no-follow", "--config", str(site)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while "Live view" not in log_path.read_text():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"edge demo did not start:\n{log_path.read_text()}")
                time.sleep(0.2)
            source = ""
            while not source.startswith("edge-alarm"):  # its first report is out
                out = subprocess.run(
                    [EDGE, "diag", "--json", "--config", str(site)], capture_output=True, text=True
                )
                source = json.loads(out.stdout).get("source", "")
                if time.monotonic() > deadline:
                    raise SystemExit("edge-alarm published no diagnostics report")
                time.sleep(0.5)
            walls = []
            for _ in range(runs):
                started = time.monotonic()
                subprocess.run(
                    [EDGE, "diag", "--json", "--config", str(site)], capture_output=True, text=True
                )
                walls.append(time.monotonic() - started)
            return walls
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def remote(tmp: Path, runs: int) -> tuple[list[float], list[float]]:
    """Round trips, and how long edge-alarm's run of the checks took in each."""
    tmp.mkdir(parents=True)
    site = Site(tmp)
    try:
        trips, runs_s = [], []
        for _ in range(runs):
            cmd = site.command("diag", {})
            started = time.monotonic()
            site.console.publish(f"sites/{SITE}/cmd/diag", json.dumps(cmd))
            while True:
                left = started + 10 - time.monotonic()
                if left <= 0:
                    raise SystemExit("no diagnostics report for cmd/diag within 10 s")
                msg = site.console.expect(f"sites/{SITE}/diag", left)
                report = json.loads(msg.payload)
                if report.get("nonce") == cmd["nonce"]:
                    runs_s.append(float(report["took_s"]))
                    break
            trips.append(time.monotonic() - started)
            site.result(cmd["nonce"])
        return trips, runs_s
    finally:
        site.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        say("local: edge demo, then `edge diag --json`")
        walls = local(Path(tmp) / "local", args.runs)
        say(f"  median {statistics.median(walls):.3f} s, slowest {max(walls):.3f} s")
        say("remote: signed cmd/diag through the bridge")
        trips, checks = remote(Path(tmp) / "remote", args.runs)
        say(f"  median {statistics.median(trips):.3f} s, slowest {max(trips):.3f} s")
    print(
        json.dumps(
            {
                "bench": "diag",
                "local_s": round(statistics.median(walls), 3),
                "local_max_s": round(max(walls), 3),
                "remote_s": round(statistics.median(trips), 3),
                "remote_max_s": round(max(trips), 3),
                "alarm_checks_s": round(statistics.median(checks), 3),
                "runs": args.runs,
                "targets_s": {"local": 1.0, "remote": 2.0},
            }
        )
    )


if __name__ == "__main__":
    main()
