"""systemd integration against a test-owned NOTIFY_SOCKET, with and without systemd-python."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge import system


@pytest.fixture(params=["systemd-python", "fallback"])
def notify_socket(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd, reached through each notify path."""
    if request.param == "fallback":
        monkeypatch.setitem(sys.modules, "systemd.daemon", None)  # import fails → fallback
    else:
        pytest.importorskip("systemd.daemon")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def drain(sock: socket.socket) -> list[str]:
    sock.setblocking(False)
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(2.0)


def test_ready_status_and_stopping_reach_the_socket(notify_socket: socket.socket) -> None:
    system.ready("monitoring 3 zones")
    assert notify_socket.recv(4096).decode().split("\n") == ["READY=1", "STATUS=monitoring 3 zones"]
    system.status("degraded: broker down")
    assert notify_socket.recv(4096) == b"STATUS=degraded: broker down"
    system.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_fallback_reaches_an_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd.daemon", None)
    name = f"edge-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert system.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("fallback", [False, True])
def test_notify_is_a_no_op_outside_systemd(fallback: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if fallback:
        monkeypatch.setitem(sys.modules, "systemd.daemon", None)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert system.notify("READY=1") is False


def test_watchdog_pings_only_while_every_loop_beats(notify_socket: socket.socket) -> None:
    async def main() -> None:
        dog = system.Watchdog(interval=0.05)
        dog.register("publisher", max_silence=0.3)
        dog.register("inputs", max_silence=0.3)
        runner = asyncio.create_task(dog.run())

        async def beat(name: str, seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                dog.beat(name)
                await asyncio.sleep(0.02)

        inputs = asyncio.create_task(beat("inputs", 60))
        publisher = asyncio.create_task(beat("publisher", 0.4))
        await asyncio.sleep(0.2)
        assert "WATCHDOG=1" in drain(notify_socket)
        await publisher  # the publisher stops beating; inputs keeps going
        while dog.stale() != ["publisher"]:
            await asyncio.sleep(0.01)
        drain(notify_socket)
        await asyncio.sleep(0.3)  # six watchdog intervals
        assert drain(notify_socket) == []
        dog.beat("publisher")  # it recovers: pings resume
        await asyncio.sleep(0.15)
        assert "WATCHDOG=1" in drain(notify_socket)
        for task in (runner, inputs):
            task.cancel()
        await asyncio.gather(runner, inputs, return_exceptions=True)

    asyncio.run(main())


def test_watchdog_interval_comes_from_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert system.Watchdog().interval == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert system.Watchdog().interval is None
    monkeypatch.delenv("WATCHDOG_USEC")
    monkeypatch.delenv("WATCHDOG_PID")
    dog = system.Watchdog()
    assert dog.interval is None

    async def idles() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(dog.run(), 0.1)

    asyncio.run(idles())
    with pytest.raises(KeyError, match="call register"):
        dog.beat("nobody")


@pytest.fixture
def root_logging() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_setup_logging_uses_stderr_outside_systemd(
    root_logging: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for var in ("INVOCATION_ID", "JOURNAL_STREAM"):
        monkeypatch.delenv(var, raising=False)
    system.setup_logging("edge-test", "debug")
    system.setup_logging("edge-test", "DEBUG")  # again: replaces, does not duplicate
    ours = [h for h in root_logging.handlers if h.get_name() == "edge:edge-test"]
    assert len(ours) == 1 and type(ours[0]) is logging.StreamHandler
    logging.getLogger("edge.test").debug(
        "config %s", {"zone": "hall", "password": "hunter2", "dc09": {"aes_key": "00ff"}}
    )
    err = capsys.readouterr().err
    assert " DEBUG edge.test: config {" in err
    assert "'zone': 'hall'" in err and "'password': '***'" in err and "'aes_key': '***'" in err
    assert "hunter2" not in err and "00ff" not in err
    with pytest.raises(ValueError, match="unknown log level"):
        system.setup_logging("edge-test", "LOUD")


def test_secret_filter_masks_extra_fields_and_leaves_the_caller_dict_alone() -> None:
    secrets = {"token": "abc", "keepalive": 30, "bypass": ["hall"]}
    record = logging.LogRecord("x", logging.INFO, "f", 1, "%s", (secrets,), None)
    record.__dict__.update(API_KEY="k", ZONE="hall")  # what extra={...} does
    assert system.SecretFilter().filter(record)
    # a lone dict argument becomes record.args itself (logging's %(name)s support)
    assert record.args == {"token": "***", "keepalive": 30, "bypass": ["hall"]}
    assert (record.__dict__["API_KEY"], record.__dict__["ZONE"]) == ("***", "hall")
    assert secrets["token"] == "abc"


def test_notify_never_blocks_when_the_supervisor_stops_reading(
    notify_socket: socket.socket,
) -> None:
    """A full notify socket makes notify() return False at once: the event loop never waits."""
    import threading

    results: list[bool] = []

    def flood() -> None:
        results.extend(system.notify(f"STATUS=update {i}") for i in range(200))

    worker = threading.Thread(target=flood, daemon=True)
    worker.start()
    worker.join(3.0)
    assert not worker.is_alive(), "notify() blocked on a socket nobody reads"
    assert results[0] is True and results[-1] is False  # the queue filled, then refused
