"""Transmission to the central station: latency over the bridge and DC-09, and backlog drain.

Real parts only: a central mosquitto with TLS and the shipped ACL, the box broker running the
configuration we generate (bridge over mutual TLS), `edge run alarm` as a subprocess, a
console on the central broker that acknowledges every event id it receives (QoS 1, batched
every 5 ms as a central station would, so the outbox stays empty), pysiaalarm's receiver.

1. Latency: simulated input edge (a publish on edge/sim/zones/panic/set on the box broker)
   → the panic / panic_restore event at the console, through journal, outbox, box broker and
   bridge. The panic zone (24 h) is tripped and restored; the partition is armed and
   disarmed every 19 alarms, as a disarm resets every member's swinger count (24 h zones too).
2. DC-09 latency: the same edges → pysiaalarm's callback (run once its ACK is written), with
   a site that has [dc09] and no [central].
3. Drain: the central broker is stopped; edge-alarm journals 10,000 panic / panic_restore
   events from live trips at full speed (plus the arm / disarm events that keep the swinger
   limit away) and its box-bus publisher finishes replaying them; the central broker comes
   back. Timed from the link coming up (or the first event, if earlier) until the console
   holds every id of that backlog.

Debounce is 0 ms: the figures are the software path alone. Progress goes to stderr; the last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import BusWatcher, NotifySocket, SiaReceiver, percentile, start_alarm, stop, write_site
from support.broker import Broker
from support.central import SUPERUSER, central_section, connect, start_box, start_central
from support.pki import Pki, make_pki

from edge.bus import Topics
from edge.bus.identity import load_credentials
from edge.events import Event, Kind
from edge.journal import JOURNAL_FILE, Journal

SITE = "site-a"
EDGES = 1000
DC09_EDGES = 300
BACKLOG = 10_000
SWINGER = 20
CYCLE = (SWINGER - 1) * 2  # edges between two disarms: the limit would mute the 20th alarm
FAST_CYCLE = (SWINGER - 5) * 2  # at full speed: edges and commands may overtake each other
ZONE = "panic"
BENCH_USER = SUPERUSER
ACCOUNT = "1234"
CONSOLE_ID = "central-console"  # the ACL's console user; the broker makes it the client id
ACK_EVERY_S = 0.005
ACK_MAX_IDS = 200
DRAIN_TIMEOUT_S = 120.0
EDGE = str(Path(sys.executable).with_name("edge"))
EVENTS_TOPIC, LINK_TOPIC = f"sites/{SITE}/events", f"sites/{SITE}/link"
TARGETS = {"target_p99_ms": 50, "target_dc09_p99_ms": 50, "target_drain_events_per_s": 1000}


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def toml_table(name: str, values: dict[str, Any]) -> str:
    return f"\n[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


class Console:
    """The central station: timestamps what arrives and acknowledges event ids in batches.

    Its session is persistent: the broker keeps the subscription and queues what arrives
    while the console reconnects after a restart of the central broker."""

    def __init__(self, central: Broker, pki: Pki, *, subscribe: bool) -> None:
        self.events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue(maxsize=100_000)
        self.links: queue.Queue[tuple[float, bytes | bytearray]] = queue.Queue(maxsize=1000)
        self._ids: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.peer = connect(
            int(central.port or 0),
            cert=pki.console,
            ca_file=pki.ca.ca_file,
            client_id=CONSOLE_ID,
            session_expiry_s=3600,
        )
        self.peer.client.on_message = lambda _c, _u, m: self._record(m.topic, m.payload)
        self.peer.client.on_publish = lambda *_a: None  # acks are not awaited one by one
        for msg in self.peer.seen():  # arrived before our callback was in place
            self._record(msg.topic, msg.payload)
        if subscribe:
            self.peer.subscribe(f"sites/{SITE}/#")
        self._acker = threading.Thread(target=self._ack_loop, name="console-acks", daemon=True)
        self._acker.start()

    def _record(self, topic: str, payload: bytes | bytearray) -> None:
        at = time.monotonic()
        if topic == EVENTS_TOPIC:
            body = json.loads(payload)
            self.events.put_nowait((at, body))
            with self._lock:
                self._ids.append(body["id"])
        elif topic == LINK_TOPIC:
            self.links.put_nowait((at, payload))

    def _ack_loop(self) -> None:
        while not self._stop.wait(ACK_EVERY_S):
            with self._lock:
                ids, self._ids = self._ids, []
            for start in range(0, len(ids), ACK_MAX_IDS):
                body = json.dumps({"v": 1, "ids": ids[start : start + ACK_MAX_IDS]})
                self.peer.client.publish(f"sites/{SITE}/ack", body, qos=1)

    def next_event(self, timeout: float) -> tuple[float, dict[str, Any]]:
        try:
            return self.events.get(timeout=max(0.01, timeout))
        except queue.Empty:
            raise TimeoutError(f"no event at the console within {timeout:.1f} s") from None

    def link_up_at(self) -> float | None:
        """When the console first saw the link come up ("1"), if it did."""
        seen = []
        while not self.links.empty():
            seen.append(self.links.get_nowait())
        return next((at for at, payload in seen if payload.strip() == b"1"), None)

    def close(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._acker.join()
            self.peer.close()


class Bench:
    """Brokers, watcher and edge-alarm processes; all registered on ``stack`` for stopping."""

    def __init__(self, root: Path, stack: contextlib.ExitStack, log_level: str) -> None:
        self.root, self.stack, self.log_level = root, stack, log_level
        self.pki = make_pki(root / "pki", (SITE,))
        self.central = start_central(root / "central", self.pki)
        stack.callback(self.central.stop)
        self.section = central_section(self.pki, SITE, int(self.central.port or 0))
        # The bench drives the simulator and local commands from one client: a test identity
        # allowed every topic (the services keep their own identities and ACL).
        self.box = start_box(root / "box", SITE, self.section, superuser=True)
        stack.callback(self.box.stop)
        self.watch = self.watcher("edge/alarm/reply/#")

    def watcher(self, topic: str, name: str = BENCH_USER) -> BusWatcher:
        """One watcher per identity: the box broker takes the user name as the client id."""
        assert self.box.identities is not None
        me = load_credentials(self.box.identities, name)
        auth = (me.user, me.password)
        watch = BusWatcher("127.0.0.1", int(self.box.port or 0), (topic,), auth=auth)
        self.stack.callback(watch.close)
        return watch

    def launch(self, name: str, extra: str) -> tuple[subprocess.Popen[bytes], Path]:
        """Start edge-alarm on a fresh site directory; return once it answers on the bus
        (READY=1 comes before its bus subscriptions: an edge published then is lost)."""
        work = self.root / name
        site = write_site(work, self.box.url, debounce=0, swinger=SWINGER, extra=extra,
                          site_id=SITE, identities=self.box.identities)  # fmt: skip
        notify = NotifySocket(work / "notify.sock")
        self.stack.callback(notify.close)
        proc = start_alarm(site, work, notify, log_level=self.log_level)
        self.stack.callback(stop, proc)
        notify.wait_for("READY=1", timeout=20)
        for _attempt in range(40):
            with contextlib.suppress(TimeoutError):
                self.command("status", timeout=0.5)
                return proc, site
        raise TimeoutError(f"edge-alarm answers no command; see {work / 'alarm.log'}")

    def command(self, action: str, timeout: float = 5.0) -> None:
        reply = f"{Topics.local_reply(BENCH_USER)}/{uuid.uuid4().hex[:8]}"
        self.watch.drain()
        body = {"action": action, "partition": "main", "reply": reply}
        self.watch.publish(Topics.local_cmd(BENCH_USER), json.dumps(body))
        answer = self.watch.wait(reply, timeout=timeout).json()
        if not answer.get("ok"):
            raise SystemExit(f"{action} refused: {answer}")

    def edges(self, count: int, arrival: Callable[[bool], float]) -> list[float]:
        """``count`` edges, each awaited: ``arrival(trip)`` returns when its event arrived."""
        topic = f"edge/sim/zones/{ZONE}/set"
        latencies: list[float] = []
        while len(latencies) < count:
            for i in range(min(CYCLE, count - len(latencies))):
                t0 = self.watch.publish(topic, "trip" if i % 2 == 0 else "restore")
                latencies.append((arrival(i % 2 == 0) - t0) * 1000)
            self.watch.publish(topic, "restore")
            self.command("arm")
            self.command("disarm")
        return latencies

    def flood(self, count: int) -> None:
        """``count`` edges published at full speed, nothing awaited but the commands."""
        topic = f"edge/sim/zones/{ZONE}/set"
        for start in range(0, count, FAST_CYCLE):
            for i in range(min(FAST_CYCLE, count - start)):
                self.watch.client.publish(topic, "trip" if i % 2 == 0 else "restore", qos=1)
            self.command("arm")
            self.command("disarm")


def mqtt_latency(bench: Bench, console: Console) -> list[float]:
    proc, _site = bench.launch("latency", toml_table("central", bench.section.model_dump()))
    seen: set[str] = set()

    def arrival_of(kind: str, timeout: float = 10.0) -> float:
        while True:  # an id seen before is a resend: never matched to a later edge
            at, body = console.next_event(timeout)
            if body["id"] not in seen:
                seen.add(body["id"])
                if body["kind"] == kind:
                    return at

    try:
        arrival_of("service_started", timeout=20)  # bridge, sender and console are up
        return bench.edges(EDGES, lambda trip: arrival_of("panic" if trip else "panic_restore"))
    finally:
        stop(proc)


def dc09_latency(bench: Bench) -> list[float]:
    receiver = SiaReceiver(ACCOUNT)
    bench.stack.callback(receiver.close)
    extra = toml_table("dc09", {"account": ACCOUNT})
    extra += toml_table("dc09.primary", {"host": "127.0.0.1", "port": receiver.port})
    proc, _site = bench.launch("dc09", extra)
    try:
        receiver.wait(("RR",), timeout=20)  # service_started: the path is up
        return bench.edges(DC09_EDGES, lambda trip: receiver.wait(("PA",) if trip else ("PR",)))
    finally:
        stop(proc)


def journaled(path: Path, edges: int, timeout: float = 60.0) -> tuple[set[str], int, int]:
    """Once the ``edges`` panic edges are all journaled (or ``timeout`` passed): the ids of
    every event to transmit, how many panic events there are, the last seq."""
    deadline = time.monotonic() + timeout
    while True:
        events: list[Event] = []
        with Journal(path, readonly=True) as journal:
            while batch := journal.since(events[-1].seq if events else 0, 5000):
                events += batch
        panics = sum(e.kind in (Kind.PANIC, Kind.PANIC_RESTORE) for e in events)
        if panics >= edges or time.monotonic() > deadline:
            return {e.id for e in events if e.kind.spec.transmit}, panics, events[-1].seq
        time.sleep(0.2)


def build_backlog(bench: Bench) -> tuple[set[str], dict[str, Any]]:
    """Flood with the central down, then let the box-bus publisher finish its replay: a
    flood leaves it behind, and it shares edge-alarm's event loop and bus connection with
    the uplink sender; waiting for it makes the drain measure the uplink alone."""
    events = bench.watcher("edge/events", "observer")
    t0 = time.monotonic()
    bench.flood(BACKLOG)
    ids, panics, last = journaled(bench.root / "drain" / "data" / JOURNAL_FILE, BACKLOG)
    t1 = time.monotonic()
    while events.wait("edge/events", max(0.01, t1 + 120 - time.monotonic())).json()["seq"] < last:
        pass
    t2 = time.monotonic()
    say(f"{BACKLOG} edges: {panics} panic events journaled in {t1 - t0:.1f} s, {len(ids)} "
        f"to send; the box-bus publisher caught up {t2 - t1:.1f} s later")  # fmt: skip
    return ids, {
        "backlog_n": len(ids),
        "backlog_panic_events": panics,
        "backlog_journaling_s": round(t1 - t0, 1),
        "backlog_bus_catch_up_s": round(t2 - t1, 1),
    }


def receive_all(console: Console, ids: set[str]) -> tuple[float, float, int]:
    """(first arrival, arrival of the last missing id, event messages received)."""
    missing, received, first, last = set(ids), 0, 0.0, 0.0
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while missing:
        try:
            at, body = console.next_event(deadline - time.monotonic())
        except TimeoutError:
            raise TimeoutError(f"{len(missing)} of {len(ids)} never reached the console") from None
        received += 1
        first = first or at
        if body["id"] in missing:
            missing.discard(body["id"])
            last = at
    return first, last, received


def outbox_depth(site: Path, timeout: float = 15.0) -> int | None:
    """The MQTT outbox depth edge-alarm reports, once 0 or after ``timeout``."""
    deadline, depth = time.monotonic() + timeout, None
    while time.monotonic() < deadline and depth != 0:
        out = subprocess.run([EDGE, "panel", "status", "--json", "--config", str(site)],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        with contextlib.suppress(ValueError, KeyError, TypeError):
            depth = int(json.loads(out.stdout)["outbox"]["mqtt"]["depth"])
        if depth != 0:
            time.sleep(0.2)
    return depth


def drain(bench: Bench, console: Console) -> dict[str, Any]:
    """Central down → backlog journaled → central back; time the drain."""
    console.close()
    bench.central.stop()
    proc, site = bench.launch("drain", toml_table("central", bench.section.model_dump()))
    ids, backlog = build_backlog(bench)
    restarted = time.monotonic()
    bench.central.restart()
    console = Console(bench.central, bench.pki, subscribe=False)
    bench.stack.callback(console.close)
    ready = time.monotonic()
    first, last, received = receive_all(console, ids)
    link = console.link_up_at()
    start = min(first, link or first)
    depth = outbox_depth(site)
    stop(proc)
    return {
        **backlog,
        "drain_events_per_s": round(len(ids) / (last - start)),
        "drain_s": round(last - start, 2),
        "drain_duplicates": received - len(ids),
        "drain_link_after_restart_s": round((link or first) - restarted, 2),
        "drain_console_after_restart_s": round(ready - restarted, 2),
        "drain_outbox_depth_after": depth,
    }


def spread(ms: list[float]) -> str:
    marks = ", ".join(f"p{p} {percentile(ms, p):.1f}" for p in (10, 50, 90, 99))
    return f"{marks}, max {max(ms):.1f} ms"


def run(root: Path, log_level: str) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        bench = Bench(root, stack, log_level)
        console = Console(bench.central, bench.pki, subscribe=True)
        stack.callback(console.close)
        t0 = time.monotonic()
        mqtt = mqtt_latency(bench, console)
        say(f"bridge: {len(mqtt)} edges in {time.monotonic() - t0:.1f} s: {spread(mqtt)}")
        t0 = time.monotonic()
        drained = drain(bench, console)
        say(f"drain ({time.monotonic() - t0:.1f} s): {drained}")
        t0 = time.monotonic()
        dc09 = dc09_latency(bench)
        say(f"dc09: {len(dc09)} edges in {time.monotonic() - t0:.1f} s: {spread(dc09)}")
    return {
        "bench": "uplink",
        "p50_ms": round(percentile(mqtt, 50), 2),
        "p99_ms": round(percentile(mqtt, 99), 2),
        "max_ms": round(max(mqtt), 2),
        "n": len(mqtt),
        "debounce_ms": 0,
        "ack_qos": 1,
        "dc09_p50_ms": round(percentile(dc09, 50), 2),
        "dc09_p99_ms": round(percentile(dc09, 99), 2),
        "dc09_max_ms": round(max(dc09), 2),
        "dc09_n": len(dc09),
        "backlog": "live-trips",
        "backlog_edges": BACKLOG,
        **drained,
        **TARGETS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="edge-alarm's log level")
    parser.add_argument("--keep", metavar="DIR", type=Path, help="work here and keep the logs")
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so every broker and edge-alarm started is stopped.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out = run(root, args.log_level)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
