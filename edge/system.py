"""systemd integration: readiness and watchdog notifications, journald logging.

systemd-python is optional (it needs libsystemd to build): it is imported lazily (by name, so
that mypy does not confuse it with the repository's ``systemd/`` unit directory), and without
it notifications are written to ``$NOTIFY_SOCKET`` directly (the protocol is one datagram of
newline-separated ``KEY=value`` lines) and logs go to stderr, which systemd also collects.
Outside systemd every function here is a harmless no-op, so services run the same in a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.fsutil import atomic_write

log = logging.getLogger(__name__)

JOURNAL_SOCKET = "/run/systemd/journal/socket"
STDERR_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
# Names of values never to log. Deliberately broad: masking too much is harmless, a leaked
# DC-09 key is not. (Not plain "pass": that would mask "bypass".)
SECRET_NAME = re.compile(
    r"passw(?:or)?d|passphrase|secret|token|credential|key(?:s)?$|(?:^|[_.-])key(?:[_.-]|$)",
    re.IGNORECASE,
)
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


# -- sd_notify ---------------------------------------------------------------------------------
def notify(*fields: str) -> bool:
    """Send ``KEY=value`` fields to systemd; False when not under systemd or on failure.

    Unix-socket addresses (the usual case) are written without blocking, by us: libsystemd's
    sd_notify blocks when the receiver stops reading, and a service's event loop must never
    wait on its supervisor (a stuck reader froze edge-video after ten STATUS updates). Other
    transports (vsock) are left to systemd-python.
    """
    if not fields:
        return False
    state = "\n".join(fields)
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith(("/", "@")):
        return _notify_socket(state, address)
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        log.warning("unsupported NOTIFY_SOCKET %r: install systemd-python", address)
        return False
    try:
        return bool(daemon.notify(state))
    except OSError as exc:
        log.warning("cannot notify systemd (%s): %s", state.replace("\n", " "), exc)
        return False


def _notify_socket(state: str, address: str) -> bool:
    """The sd_notify protocol: one datagram to $NOTIFY_SOCKET, never blocking."""
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8"), socket.MSG_DONTWAIT, address)
    except OSError as exc:
        log.warning("cannot notify systemd through %s: %s", address.lstrip("\0"), exc)
        return False
    return True


def ready(status: str) -> None:
    """READY=1: systemd starts the units ordered after us only now."""
    notify("READY=1", f"STATUS={status}")


def status(text: str) -> None:
    """STATUS=: the one line `systemctl status` shows."""
    notify(f"STATUS={text}")


def stopping() -> None:
    notify("STOPPING=1")


# -- clean stop marker -------------------------------------------------------------------------
STOP_MARKER_MAX = 4096  # bytes read back: the marker is ours, but read it bounded anyway


class StopMarker:
    """Tells a clean stop from a crash across a restart.

    Written when the service stops cleanly (SIGTERM, a restart command), taken (read and
    removed) when it starts. At a start, a marker means the previous run stopped cleanly;
    no marker means it ended without saying so: killed, crashed, watchdog, power cut.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, reason: str, **details: Any) -> None:
        """Leave the marker (atomically, synced: a power cut right after still finds it)."""
        body = {"reason": reason, "at": time.time(), **details}
        try:
            atomic_write(self.path, json.dumps(body).encode("utf-8"), mode=0o600)
        except OSError as exc:  # a full disk: the next start reports an unclean stop
            log.warning("clean-stop marker %s not written: %s", self.path, exc)

    def take(self) -> dict[str, Any] | None:
        """What the previous clean stop left, removed so it counts once; None when absent."""
        try:
            with self.path.open("rb") as f:
                raw = f.read(STOP_MARKER_MAX)
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("clean-stop marker %s unreadable: %s", self.path, exc)
            return None
        with contextlib.suppress(OSError):
            self.path.unlink()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {"reason": "unknown"}


# -- watchdog ----------------------------------------------------------------------------------
def watchdog_interval() -> float | None:
    """Half of $WATCHDOG_USEC (systemd's advice), or None when the watchdog is off or not ours."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None


@dataclass
class _Loop:
    max_silence: float
    last_beat: float


class Watchdog:
    """Sends WATCHDOG=1 only while every registered loop of the service is alive.

    A process whose main loop still runs but whose publisher hangs is broken; keeping systemd
    fed in that state would hide it. So each loop beats, and a single stale loop stops the
    pings: systemd then restarts the whole service into a clean state.
    """

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval if interval is not None else watchdog_interval()
        self._loops: dict[str, _Loop] = {}
        self._reported: list[str] = []

    def register(self, name: str, max_silence: float) -> None:
        """Registering counts as a first beat; re-registering resets the limit."""
        if max_silence <= 0:
            raise ValueError(f"max_silence of {name!r} must be positive, not {max_silence}")
        self._loops[name] = _Loop(max_silence, time.monotonic())

    def beat(self, name: str) -> None:
        try:
            self._loops[name].last_beat = time.monotonic()
        except KeyError:
            raise KeyError(
                f"watchdog loop {name!r} is not registered: call register() first"
            ) from None

    def stale(self) -> list[str]:
        now = time.monotonic()
        return sorted(n for n, lp in self._loops.items() if now - lp.last_beat > lp.max_silence)

    def check(self) -> bool:
        """One tick: ping systemd if every loop is alive; returns whether it pinged."""
        stale = self.stale()
        if stale != self._reported:
            if stale:
                log.error(
                    "loop(s) %s silent for longer than allowed: withholding WATCHDOG=1 so "
                    "systemd restarts the service",
                    ", ".join(stale),
                )
            else:
                log.info("every watched loop beats again")
            self._reported = stale
        if stale:
            return False
        notify("WATCHDOG=1")
        return True

    async def run(self) -> None:
        """Supervised task; idles forever when there is no watchdog (so supervisors keep it)."""
        if self.interval is None:
            await asyncio.get_running_loop().create_future()
            return
        while True:
            self.check()
            await asyncio.sleep(self.interval)


# -- logging -----------------------------------------------------------------------------------
class SecretFilter(logging.Filter):
    """Masks values of secret-looking keys in dict arguments and in ``extra`` fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, Mapping):
            record.args = _mask(record.args)
        elif isinstance(record.args, tuple):
            record.args = tuple(_mask(a) for a in record.args)
        for name in list(vars(record)):
            if name not in _STANDARD_ATTRS and SECRET_NAME.search(name):
                setattr(record, name, MASK)
        return True


def _mask(value: Any, depth: int = 0) -> Any:
    """A masked copy (the caller's dict is left alone); depth-bounded against cycles."""
    if depth > 8:
        return value
    if isinstance(value, Mapping):
        return {
            k: MASK if isinstance(k, str) and SECRET_NAME.search(k) else _mask(v, depth + 1)
            for k, v in value.items()
        }
    if type(value) in (list, tuple):  # exactly: a namedtuple cannot be rebuilt from one iterable
        return type(value)(_mask(v, depth + 1) for v in value)
    return value


def _journal_wanted() -> bool:
    """stderr already goes to the journal, or we run in a unit; and journald is there."""
    if not os.path.exists(JOURNAL_SOCKET):
        return False
    return _stderr_is_journal() or bool(os.environ.get("INVOCATION_ID"))


def _stderr_is_journal() -> bool:
    """$JOURNAL_STREAM names the device:inode of the stream; it must still be our stderr."""
    try:
        dev, ino = (int(x) for x in os.environ.get("JOURNAL_STREAM", "").split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def setup_logging(service: str, level: str = "INFO") -> None:
    """Root logging for a service: journald with structured fields when there, else stderr.

    Extra fields (``extra={"ZONE": "hall"}``) become journal fields; journald wants them
    upper-case. Calling it again replaces the handler installed before.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use DEBUG, INFO, WARNING or ERROR")
    handler = _journal_handler(service) if _journal_wanted() else None
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(STDERR_FORMAT))
    handler.addFilter(SecretFilter())
    handler.set_name(f"edge:{service}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if (h.get_name() or "").startswith("edge:")]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    if numeric > logging.DEBUG:  # ICE logs every connectivity check at INFO
        logging.getLogger("aioice").setLevel(logging.WARNING)


def _journal_handler(service: str) -> logging.Handler | None:
    try:
        journal = importlib.import_module("systemd.journal")
    except ImportError:
        return None
    handler: logging.Handler = journal.JournalHandler(SYSLOG_IDENTIFIER=service)
    return handler
