"""A small stand-in for systemd's service manager: run one service as a child process and
restart it by the rules of a real unit file.

There is no systemd in the test container (PID 1 is not systemd), yet what a box does after a
crash is decided by the unit's own settings. This applies them, read from the shipped file:

- ``Restart=`` (no, always, on-success, on-failure, on-abnormal, on-abort, on-watchdog; no
  watchdog here, so on-watchdog never fires), with systemd's clean exit: code 0 or one of the
  signals HUP, INT, TERM, PIPE;
- ``RestartPreventExitStatus=`` (exit codes and signal names);
- ``RestartSec=`` (systemd time spans: ``2s``, ``500ms``, ``1min 30s``, a bare number is
  seconds; default 100 ms);
- ``StartLimitIntervalSec=`` / ``StartLimitBurst=`` from ``[Unit]`` (systemd's defaults 10 s
  and 5 when absent; an interval of 0 disables the limit): a start that would be the
  ``Burst + 1``-th within the interval is refused and the unit stays failed, as
  ``start-limit-hit`` does.

Usage::

    rules = UnitRules.from_file(Path("systemd/edge-alarm.service"))
    with Restarter(rules, lambda: subprocess.Popen([...])) as unit:
        unit.wait_starts(1)
        unit.kill(signal.SIGKILL)      # a crash: restarted after RestartSec
        unit.wait_starts(2, timeout=10)
    # leaving the block stops it like `systemctl stop` (SIGTERM, no restart)

Not modelled: the watchdog, Type=notify readiness (the caller watches NOTIFY_SOCKET itself),
ExecStartPre=, timeouts, and ``RestartSteps=`` (absent from Debian 12's systemd 252).
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CLEAN_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE}
_SPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
    "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
    "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
}  # fmt: skip
STOP_TIMEOUT_S = 10.0


def parse_span(text: str) -> float:
    """A systemd time span in seconds (``infinity`` is float("inf"))."""
    text = text.strip()
    if text == "infinity":
        return float("inf")
    total, pos = 0.0, 0
    for m in re.finditer(r"\s*(\d+(?:\.\d+)?)\s*([a-z]*)", text):
        if m.start() != pos:
            break
        unit = m.group(2) or "s"
        if unit not in _SPAN_UNITS:
            raise ValueError(f"unknown time unit {unit!r} in {text!r}")
        total += float(m.group(1)) * _SPAN_UNITS[unit]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a systemd time span: {text!r}")
    return total


def _settings(path: Path) -> dict[tuple[str, str], list[str]]:
    """(section, key) -> values, in file order (keys may repeat; an empty value resets)."""
    out: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        values = out.setdefault((section, key.strip()), [])
        if value.strip():
            values.append(value.strip())
        else:
            values.clear()
    return out


@dataclass(frozen=True)
class UnitRules:
    """The restart rules of one unit."""

    restart: str = "no"
    restart_sec: float = 0.1
    prevent_status: frozenset[int] = frozenset()
    prevent_signals: frozenset[int] = frozenset()
    start_limit_interval: float = 10.0
    start_limit_burst: int = 5

    @classmethod
    def from_file(cls, path: Path) -> UnitRules:
        s = _settings(path)

        def last(section: str, key: str, default: str) -> str:
            values = s.get((section, key))
            return values[-1] if values else default

        codes, signals = set(), set()
        for value in s.get(("Service", "RestartPreventExitStatus"), []):
            for word in value.split():
                if word.isdigit():
                    codes.add(int(word))
                else:
                    name = word if word.startswith("SIG") else f"SIG{word}"
                    signals.add(int(signal.Signals[name]))
        return cls(
            restart=last("Service", "Restart", "no"),
            restart_sec=parse_span(last("Service", "RestartSec", "100ms")),
            prevent_status=frozenset(codes),
            prevent_signals=frozenset(signals),
            start_limit_interval=parse_span(last("Unit", "StartLimitIntervalSec", "10s")),
            start_limit_burst=int(last("Unit", "StartLimitBurst", "5")),
        )

    def restarts_after(self, returncode: int) -> bool:
        """Would systemd restart a main process that ended with ``returncode`` (negative:
        killed by that signal), the unit not being stopped on purpose?"""
        sig = -returncode if returncode < 0 else None
        if (sig is None and returncode in self.prevent_status) or sig in self.prevent_signals:
            return False
        clean = returncode == 0 or (sig is not None and sig in CLEAN_SIGNALS)
        return {
            "no": False,
            "always": True,
            "on-success": clean,
            "on-failure": not clean,
            "on-abnormal": sig is not None and not clean,
            "on-abort": sig is not None and not clean,
            "on-watchdog": False,
        }[self.restart]


@dataclass
class Restarter:
    """Runs ``spawn()`` and restarts it by ``rules`` in a thread of its own."""

    rules: UnitRules
    spawn: Callable[[], subprocess.Popen[bytes]]
    starts: list[float] = field(default_factory=list)  # monotonic time of every start
    exits: list[tuple[float, int]] = field(default_factory=list)  # (when, returncode)
    state: str = "inactive"  # running, auto-restart, failed (start limit), stopped, inactive
    proc: subprocess.Popen[bytes] | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def start(self) -> Restarter:
        self._thread = threading.Thread(target=self._run, name="restarter", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        recent: collections.deque[float] = collections.deque()
        while not self._stop.is_set():
            now = time.monotonic()
            limit = self.rules.start_limit_interval
            while recent and limit > 0 and now - recent[0] >= limit:
                recent.popleft()
            if limit > 0 and len(recent) >= self.rules.start_limit_burst:
                self._set("failed")  # start-limit-hit: nothing restarts it any more
                return
            recent.append(now)
            with self._changed:
                if self._stop.is_set():  # stop() came during RestartSec: no new process
                    break
                self.proc = self.spawn()
                self.starts.append(now)
                self.state = "running"
                self._changed.notify_all()
            code = self.proc.wait()
            with self._changed:
                self.exits.append((time.monotonic(), code))
                self._changed.notify_all()
            if self._stop.is_set():
                break
            if not self.rules.restarts_after(code):
                self._set("failed" if code != 0 else "inactive")
                return
            self._set("auto-restart")
            if self._stop.wait(self.rules.restart_sec):
                break
        self._set("stopped")

    def _set(self, state: str) -> None:
        with self._changed:
            self.state = state
            self._changed.notify_all()

    def wait_starts(self, n: int, timeout: float = 30.0) -> float:
        """Monotonic time of the ``n``-th start, once it happened."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.starts) >= n, timeout):
                raise TimeoutError(
                    f"{len(self.starts)} start(s) within {timeout} s, expected {n}; "
                    f"state {self.state}, exits {self.exits}"
                )
            return self.starts[n - 1]

    def wait_state(self, state: str, timeout: float = 30.0) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: self.state == state, timeout):
                raise TimeoutError(f"state {self.state}, not {state}, after {timeout} s")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the running process (a crash, or a kill by someone else: not a stop)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)

    def stop(self) -> None:
        """Like `systemctl stop`: SIGTERM (SIGKILL after STOP_TIMEOUT_S), no restart."""
        with self._changed:  # no spawn can start after this
            self._stop.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)

    def __enter__(self) -> Restarter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
