"""edge-alarm under faults of its own process and of the box bus, end to end: a real
mosquitto, `edge run alarm` as a subprocess, systemd's notify socket played by the test.

* READY=1 is said only once the loops' subscriptions exist: a command published the moment
  READY arrives is answered (before, READY came before edge-alarm had even connected).
* A broker that hangs (SIGSTOP) while edge-alarm answers local commands and tele-actions
  makes the answers fail after 5 s, logged; edge-alarm stays up and answers again after.
* A clean stop journals service_stopped with its reason; the next start says whether the
  previous run stopped cleanly (SIGTERM) or not (SIGKILL), and the first start says so.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.alarm import BusWatcher, NotifySocket, start_alarm, stop, write_site
from support.broker import Broker, free_port
from support.site import SITE, Site

from edge.bus import Topics

EDGE = str(Path(sys.executable).with_name("edge"))
USER = "installer"
STUCK_S = 7.0  # the broker hangs longer than edge-alarm's 5 s reply timeout


class Box:
    """edge-alarm on a simulated site, restartable, with a watcher on the whole box bus."""

    def __init__(self, tmp: Path, broker: Broker) -> None:
        self.tmp, self.broker = tmp, broker
        self.site = write_site(tmp, broker.url)
        self.notify = NotifySocket(tmp / "notify.sock")
        self.watch = BusWatcher("127.0.0.1", int(broker.port or 0))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Start edge-alarm; returns when READY=1 arrived (monotonic)."""
        self.proc = start_alarm(self.site, self.tmp, self.notify)
        return self.notify.wait_for("READY=1", timeout=10)

    def command(self, action: str, **args: Any) -> str:
        """A local command as user installer; returns its private reply topic."""
        reply = f"{Topics.local_reply(USER)}/{secrets.token_hex(4)}"
        body = json.dumps({"action": action, "reply": reply, **args})
        self.watch.publish(Topics.local_cmd(USER), body)
        return reply

    def journal(self) -> list[dict[str, Any]]:
        out = subprocess.run(
            [EDGE, "events", "--json", "--limit", "1000", "--config", str(self.site)],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def log(self) -> str:
        return (self.tmp / "alarm.log").read_text(errors="replace")

    def close(self) -> None:
        self.watch.close()
        if self.proc is not None:
            stop(self.proc)
        self.notify.close()


@pytest.fixture
def box(tmp_path: Path, broker: Broker) -> Iterator[Box]:
    b = Box(tmp_path, broker)
    yield b
    b.close()


def kinds(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["kind"] == kind]


def test_commands_sent_at_ready_are_answered_and_stops_are_told_apart(box: Box) -> None:
    for run in range(3):
        box.start()
        # The very moment READY arrives: a local command, a simulator command, a tele-action.
        reply = box.command("status")
        sim_reply = f"{Topics.SIM_REPLY}/{run}"
        box.watch.publish(Topics.sim_set("panic"), json.dumps({"cmd": "trip", "reply": sim_reply}))
        live_reply = f"{Topics.LIVE_ACTION_REPLY}/{run}"
        action = {"action": "on", "output": "siren", "user": "op", "reply": live_reply}
        box.watch.publish(Topics.LIVE_ACTION, json.dumps(action))
        assert box.watch.wait(reply, timeout=5).json()["ok"] is True
        assert box.watch.wait(sim_reply, timeout=5).json()["ok"] is True
        refused = box.watch.wait(live_reply, timeout=5).json()  # siren is not a tele-action
        assert refused["ok"] is False and "tele-action" in refused["reason"]
        box.watch.publish(Topics.sim_set("panic"), "restore")
        assert box.proc is not None
        if run < 2:
            assert stop(box.proc) == 0  # SIGTERM, as systemd stops it
            stopped = box.watch.wait("edge/events", timeout=5, kind="service_stopped").json()
            assert stopped["details"]["reason"] == "SIGTERM" and stopped["details"]["clean"]
        else:
            box.proc.kill()
            box.proc.wait()
    box.start()
    started = [r["details"] for r in kinds(box.journal(), "service_started")]
    assert [d["previous_stop"] for d in started] == ["none", "clean", "clean", "unclean"]
    assert [d.get("previous_reason") for d in started[1:3]] == ["SIGTERM", "SIGTERM"]
    assert all(d["version"] for d in started)
    stopped = kinds(box.journal(), "service_stopped")
    assert [(r["details"]["reason"], r["category"]) for r in stopped] == [("SIGTERM", "system")] * 2
    assert (stopped[0]["sia"], stopped[0]["cid"]) == (None, None)  # MQTT only
    assert not (box.tmp / "data" / "clean-stop").exists()  # taken by the start


def test_a_hung_broker_while_answering_does_not_end_edge_alarm(box: Box) -> None:
    box.start()
    assert box.proc is not None
    for attempt in range(3):
        # A burst of requests, so that edge-alarm is answering when the broker stops.
        first = box.command("status")
        for n in range(200):
            box.command("status")
            if n % 2:
                action = {"action": "on", "output": "siren", "user": "op"}
                action["reply"] = f"{Topics.LIVE_ACTION_REPLY}/{attempt}-{n}"
                box.watch.publish(Topics.LIVE_ACTION, json.dumps(action))
        box.watch.wait(first, timeout=5)
        box.broker.pause()
        try:
            time.sleep(STUCK_S)
        finally:
            box.broker.resume()
        if "could not answer on" in box.log():
            break
    assert "could not answer on" in box.log(), box.log()[-3000:]
    assert box.proc.poll() is None, box.log()[-3000:]
    # It still answers: the queued requests drain, then a fresh one is answered.
    late = box.command("status")
    assert box.watch.wait(late, timeout=60).json()["ok"] is True
    assert box.proc.poll() is None
    assert "Traceback" not in box.log()


def test_panel_status_into_a_closed_pipe_is_quiet(box: Box) -> None:
    box.start()
    proc = subprocess.Popen(
        [EDGE, "panel", "status", "--json", "--config", str(box.site)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # `| head` that has already gone
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=30) == 0 and "Traceback" not in err, err


@pytest.mark.slow
def test_signed_command_at_ready_and_restart_command_is_a_clean_stop(tmp_path: Path) -> None:
    site = Site(tmp_path)
    try:
        stop(site.proc)
        site.proc = start_alarm(site.site, tmp_path / "alarm", site.notify)
        site.notify.wait_for("READY=1", timeout=10)
        diag = site.command("diag", {})
        site.console.publish(f"sites/{SITE}/cmd/diag", json.dumps(diag))
        assert site.result(diag["nonce"])["ok"] is True
        restart = site.command("restart", {"service": "alarm"})
        site.console.publish(f"sites/{SITE}/cmd/restart", json.dumps(restart))
        assert site.result(restart["nonce"])["ok"] is True
        assert site.proc.wait(timeout=10) == 0  # systemd starts it again (Restart=always)
        site.proc = start_alarm(site.site, tmp_path / "alarm", site.notify)
        site.notify.wait_for("READY=1", timeout=10)
        why = "restart command (alarm)"
        stopped = event_where(site, "service_stopped", lambda d: d["reason"] == why)
        started = event_where(site, "service_started", lambda d: d.get("previous_reason") == why)
        assert stopped["details"]["clean"] and started["details"]["previous_stop"] == "clean"
        assert stopped["seq"] < started["seq"]
    finally:
        site.close()


def event_where(site: Site, kind: str, test: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The first event of ``kind`` at the central whose details pass ``test``."""
    for _ in range(5):
        body = site.event(kind)
        if test(body["details"]):
            return body
    raise AssertionError(f"no {kind} with the expected details")


def test_stop_marker_is_bounded_and_taken_once(tmp_path: Path) -> None:
    from edge.system import STOP_MARKER_MAX, StopMarker

    marker = StopMarker(tmp_path / "clean-stop")
    assert marker.take() is None
    marker.write("SIGTERM", version="1.2.3")
    assert os.stat(marker.path).st_mode & 0o777 == 0o600
    assert marker.take() == {"reason": "SIGTERM", "at": pytest.approx(time.time(), abs=5),
                             "version": "1.2.3"}  # fmt: skip
    assert marker.take() is None
    marker.path.write_bytes(b"{" + b" " * (STOP_MARKER_MAX * 2))  # garbage, oversized
    assert marker.take() == {"reason": "unknown"} and not marker.path.exists()


def test_ready_comes_within_the_start_timeout_without_a_broker(tmp_path: Path) -> None:
    """The alarm path must start without the box bus: READY after the bounded wait (5 s,
    inside the unit's TimeoutStartSec=10s), saying what is missing."""
    site = write_site(tmp_path, f"mqtt://127.0.0.1:{free_port()}")  # nothing listens there
    notify = NotifySocket(tmp_path / "notify.sock")
    t0 = time.monotonic()
    proc = start_alarm(site, tmp_path, notify)
    try:
        ready_s = notify.wait_for("READY=1", timeout=10) - t0
        status = next(text for _, text in notify.messages if "READY=1" in text)
        assert 5.0 <= ready_s < 9.0, ready_s
        assert "box bus not answering" in status, status
        assert proc.poll() is None
    finally:
        stop(proc)
        notify.close()
