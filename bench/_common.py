"""Shared set-up for the benchmarks: a real mosquitto and the real `edge run alarm`."""

from __future__ import annotations

import asyncio
import queue
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.alarm import BusWatcher, NotifySocket, rss_mb, start_alarm, stop, write_site  # noqa: E402
from support.broker import start_mosquitto  # noqa: E402

__all__ = [
    "BusWatcher",
    "NotifySocket",
    "SiaReceiver",
    "percentile",
    "rss_mb",
    "start_alarm",
    "start_mosquitto",
    "stop",
    "write_site",
]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1] if p < 100 else ordered[-1]


def median(values: list[float]) -> float:
    return statistics.median(values)


class SiaReceiver:
    """pysiaalarm's DC-09 TCP receiver on 127.0.0.1, run by a thread with its own event loop
    so a synchronous bench can drive the box while it receives. ``codes`` gets (monotonic
    time, SIA code) of every event the receiver accepted: its callback runs once the ACK is
    written."""

    def __init__(self, account: str) -> None:
        self.codes: queue.Queue[tuple[float, str]] = queue.Queue(maxsize=100_000)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sia", daemon=True)
        self.thread.start()
        self.client: Any = None
        try:
            start = asyncio.run_coroutine_threadsafe(self._start(account), self.loop)
            self.port = start.result(10)
        except BaseException:
            self.close()
            raise

    async def _start(self, account: str) -> int:
        from pysiaalarm import SIAAccount  # a dev extra: only the DC-09 benches need it
        from pysiaalarm.aio import SIAClient

        async def accepted(event: Any) -> None:
            self.codes.put_nowait((time.monotonic(), str(event.code)))

        client: Any = SIAClient  # its stubs leave async_start / async_stop abstract
        self.client = client("127.0.0.1", 0, [SIAAccount(account)], accepted)
        await self.client.async_start()
        return int(self.client.server.sockets[0].getsockname()[1])

    def wait(self, codes: tuple[str, ...], timeout: float = 10.0) -> float:
        """Arrival time of the next event whose code is one of ``codes``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                at, code = self.codes.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(
                    f"the DC-09 receiver got no {codes} within {timeout} s"
                ) from None
            if code in codes:
                return at

    def close(self) -> None:
        if self.client is not None:
            stopping = asyncio.run_coroutine_threadsafe(self.client.async_stop(), self.loop)
            stopping.result(10)
            self.client = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
        if not self.loop.is_closed():
            self.loop.close()
