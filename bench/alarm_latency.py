"""Simulated input edge → event received on the box bus, over 1,000 edges.

An edge is `edge sim`'s message on edge/sim/zones/<id>/set (the simulated pin changes when
edge-alarm receives it); the event is the journal row arriving on edge/events at an
independent subscriber. The zone is an instant burglary zone of an armed partition: each
trip gives a burglary alarm, each restore a burglary restore. The partition is disarmed and
re-armed every few alarms so the swinger limit never hides an edge.

Main figures use debounce_ms = 0 (the software path alone); the reference pass in the same
run uses the default 20 ms debounce, which adds its hold time by design. Last line: JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

from _common import (
    BusWatcher,
    NotifySocket,
    percentile,
    start_alarm,
    start_mosquitto,
    stop,
    write_site,
)

from edge.bus import Topics

EDGES = 1000
BENCH_USER = "installer"  # local box-bus user the bench commands as
REFERENCE_EDGES = 200
SWINGER = 20
ZONE = "office"


def command(watch: BusWatcher, body: dict[str, object]) -> None:
    reply = f"{Topics.local_reply(BENCH_USER)}/{uuid.uuid4().hex[:8]}"
    watch.client.subscribe(reply, qos=1)
    time.sleep(0.05)
    watch.publish(Topics.local_cmd(BENCH_USER), json.dumps({**body, "reply": reply}))
    answer = watch.wait(reply, timeout=5).json()
    if not answer.get("ok"):
        raise SystemExit(f"command {body} refused: {answer}")


def measure(root: Path, url: str, host: str, port: int, debounce: int, edges: int) -> list[float]:
    work = root / f"debounce{debounce}"
    work.mkdir()
    site = write_site(work, url, debounce=debounce, swinger=SWINGER)
    notify = NotifySocket(work / "notify.sock")
    proc = start_alarm(site, work, notify, log_level="WARNING")
    watch = BusWatcher(host, port, topics=("edge/events", "edge/alarm/reply/#"))
    latencies: list[float] = []
    try:
        notify.wait_for("READY=1")
        time.sleep(0.5)
        topic = f"edge/sim/zones/{ZONE}/set"
        while len(latencies) < edges:
            command(watch, {"action": "arm", "partition": "main"})
            for i in range((SWINGER - 1) * 2):  # the swinger limit would mute the last
                if len(latencies) >= edges:
                    break
                trip = i % 2 == 0
                kinds = ("burglary", "burglary_confirmed") if trip else ("burglary_restore",)
                watch.drain()
                t0 = watch.publish(topic, "trip" if trip else "restore")
                while True:
                    msg = watch.wait("edge/events", timeout=5)
                    if msg.json()["kind"] in kinds:
                        break
                latencies.append((msg.at - t0) * 1000)
            command(watch, {"action": "disarm", "partition": "main"})
            watch.publish(topic, "restore")
    finally:
        watch.close()
        stop(proc)
        notify.close()
    return latencies


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        broker = start_mosquitto(root / "broker")
        host, port = "127.0.0.1", int(broker.port or 0)
        try:
            main_pass = measure(root, broker.url, host, port, 0, EDGES)
            reference = measure(root, broker.url, host, port, 20, REFERENCE_EDGES)
        finally:
            broker.stop()
    p50, p99 = percentile(main_pass, 50), percentile(main_pass, 99)
    print(
        f"debounce 0 ms: p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(main_pass):.2f} ms",
        file=sys.stderr,
    )
    out = {
        "bench": "alarm_latency",
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(main_pass), 2),
        "n": len(main_pass),
        "debounce_ms": 0,
        "debounce20_p50_ms": round(percentile(reference, 50), 2),
        "debounce20_p99_ms": round(percentile(reference, 99), 2),
        "debounce20_n": len(reference),
        "target_p99_ms": 20,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
