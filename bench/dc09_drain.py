"""DC-09 backlog drain: how fast, and in what order, a backlog reaches a receiver that returns.

Real parts only: a mosquitto box bus, `edge run alarm` as a subprocess with a `[dc09]`
section, pysiaalarm's receiver (its callback runs once its ACK is written).

1. With edge-alarm stopped, BACKLOG alarm / restore pairs are appended to the site's journal,
   as an outage leaves them (events journaled while no receiver answered).
2. edge-alarm starts with the receiver down: it finds every event owed to DC-09, fails the
   first one on the primary path and starts probing.
3. After OUTAGE_S (``--outage-s``) the receiver starts on the same port. Timed: from the
   receiver's start to the first event it takes (how long the box takes to notice the
   return), and from the first to the last event of the backlog (the drain rate).

The arrival order is checked against the journal: `in_journal_order` and `reversed_pairs`
(restores that arrived before their alarm). Progress goes to stderr; the last line is one
JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import NotifySocket, start_alarm, start_mosquitto, stop, write_site

from edge.events import Event, Kind
from edge.journal import JOURNAL_FILE, Journal

ACCOUNT = "1234"
BACKLOG = 1000  # events (500 alarm / restore pairs)
OUTAGE_S = 8.0
TARGET_EVENTS_PER_S = 100
ZONES = (("door", 1), ("hall", 2), ("office", 3), ("panic", 4))
PAIRS = ((Kind.BURGLARY, Kind.BURGLARY_RESTORE), (Kind.PANIC, Kind.PANIC_RESTORE))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """pysiaalarm on a fixed port, on its own loop in a thread; started when the bench says."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: queue.Queue[tuple[float, str, str]] = queue.Queue(maxsize=100_000)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sia", daemon=True)
        self.thread.start()
        self.client: Any = None

    def start(self) -> None:
        from pysiaalarm import SIAAccount  # a dev extra: only the DC-09 benches need it
        from pysiaalarm.aio import SIAClient

        async def accepted(event: Any) -> None:
            self.got.put_nowait((time.monotonic(), str(event.code), str(event.message)))

        async def up() -> None:
            client: Any = SIAClient  # its stubs leave async_start / async_stop abstract
            self.client = client("127.0.0.1", self.port, [SIAAccount(ACCOUNT)], accepted)
            await self.client.async_start()

        asyncio.run_coroutine_threadsafe(up(), self.loop).result(10)

    def close(self) -> None:
        if self.client is not None:
            asyncio.run_coroutine_threadsafe(self.client.async_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def backlog_events(count: int) -> list[Event]:
    events = []
    for i in range(count // 2):
        zone, _number = ZONES[i % len(ZONES)]
        alarm, restore = PAIRS[zone == "panic"]
        events += [Event(alarm, zone_id=zone), Event(restore, zone_id=zone)]
    return events


def expected(journal_path: Path) -> list[tuple[str, str]]:
    """(SIA code, zone number) of every event owed to DC-09, in journal order."""
    numbers = {zone: f"{n:03d}" for zone, n in ZONES}
    with Journal(journal_path, readonly=True) as journal:
        events = journal.since(0, 100_000)
    return [
        (str(e.kind.spec.sia), numbers.get(e.zone_id or "", "000"))
        for e in events
        if e.kind.spec.transmit and e.kind.spec.sia
    ]


def reversed_pairs(received: list[tuple[str, str]]) -> int:
    """Restores that arrived while no alarm of their zone was waiting for one."""
    restores = {"BR": "BA", "PR": "PA"}
    waiting: dict[tuple[str, str], int] = {}
    count = 0
    for code, zone in received:
        if code in restores.values():
            waiting[(code, zone)] = waiting.get((code, zone), 0) + 1
        elif code in restores:
            key = (restores[code], zone)
            if waiting.get(key, 0) == 0:
                count += 1
            else:
                waiting[key] -= 1
    return count


def collect(receiver: Receiver, count: int, timeout: float) -> list[tuple[float, str, str]]:
    got: list[tuple[float, str, str]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        try:
            item = receiver.got.get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"the receiver got {len(got)} of {count} events") from None
        if item[1] != "RP":  # NULL polls
            got.append(item)
    return got


def run(root: Path, log_level: str, outage_s: float, backlog: int) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        broker = start_mosquitto(root / "broker")
        stack.callback(broker.stop)
        receiver = Receiver(free_port())
        stack.callback(receiver.close)
        dc09 = f'\n[dc09]\naccount = "{ACCOUNT}"\n'
        dc09 += f'primary = {{ host = "127.0.0.1", port = {receiver.port} }}\n'
        work = root / "site"
        site = write_site(work, broker.url, swinger=20, extra=dc09)
        journal_path = work / "data" / JOURNAL_FILE
        with Journal(journal_path) as journal:
            journal.append_many(backlog_events(backlog))
        notify = NotifySocket(work / "notify.sock")
        stack.callback(notify.close)
        proc = start_alarm(site, work, notify, log_level=log_level)
        stack.callback(stop, proc)
        notify.wait_for("READY=1", timeout=20)
        say(f"edge-alarm up with {backlog} events owed and the receiver down for {outage_s:g} s")
        time.sleep(outage_s)
        owed = expected(journal_path)  # the backlog, service start and path fault
        back = time.monotonic()
        receiver.start()
        got = collect(receiver, len(owed), timeout=120)
        first, last = got[0][0], got[-1][0]
        order = [(code, zone) for _, code, zone in got]
        say(f"{len(got)} events: first {first - back:.2f} s after the return, "
            f"then {last - first:.2f} s")  # fmt: skip
        rate = (len(got) - 1) / (last - first)
        return {
            "outage_s": outage_s,
            "backlog_n": len(got),
            "first_after_return_s": round(first - back, 2),
            "drain_s": round(last - back, 2),
            "drain_events_per_s": round(rate),
            "target_drain_events_per_s": TARGET_EVENTS_PER_S,
            "ratio_to_target": round(rate / TARGET_EVENTS_PER_S, 1),
            "in_journal_order": order == owed,
            "reversed_pairs": reversed_pairs(order),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="WARNING", help="edge-alarm's log level")
    parser.add_argument("--keep", metavar="DIR", type=Path, help="work here and keep the logs")
    parser.add_argument("--outage-s", type=float, default=OUTAGE_S, help="receiver down this long")
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="events journaled before")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(128 + signal.SIGTERM))
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
        root = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out = run(root, args.log_level, args.outage_s, args.backlog)
    out["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
