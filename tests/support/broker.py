"""A real mosquitto for tests: spawned on a free loopback port or a unix socket, stoppable,
killable and restartable on the same address so reconnection can be tested for real."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = Path("/usr/sbin/mosquitto")
READY_TIMEOUT = 5.0
UNIX_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin


def free_port() -> int:
    """A port free right now; start_mosquitto retries if another process takes it first."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    url: str
    port: int | None
    socket_path: str | None
    proc: subprocess.Popen[bytes]
    conf_path: Path
    log_path: Path
    identities: Path | None = None  # bus.identities_dir of a box broker we generated

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, as systemd would; SIGKILL if it does not exit within 5 s."""
        if self.running:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
        self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: the broker keeps its sockets but answers nothing (a hung broker)."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port or socket."""
        self.stop()
        self.proc = _spawn(self.conf_path, self.log_path)
        _wait_ready(self)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def start_mosquitto(workdir: Path, *, unix: bool = False, extra_conf: str = "") -> Broker:
    """Write a config into ``workdir``, start mosquitto and wait until it accepts connections."""
    if not MOSQUITTO.exists():
        raise FileNotFoundError(f"{MOSQUITTO} is missing: apt-get install mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    conf_path, log_path = workdir / "mosquitto.conf", workdir / "mosquitto.log"
    for _attempt in range(3):
        port, sock_path, listener = _listener(workdir, unix)
        conf_path.write_text(_config(listener, extra_conf))
        url = f"unix://{sock_path}" if sock_path else f"mqtt://127.0.0.1:{port}"
        broker = Broker(url, port, sock_path, _spawn(conf_path, log_path), conf_path, log_path)
        try:
            _wait_ready(broker)
        except RuntimeError:
            broker.kill()
            if "Address already in use" in broker.log_tail() and not unix:
                continue  # lost the free-port race; try another port
            raise
        if sock_path and not sock_path.startswith(str(workdir)):
            weakref.finalize(broker, shutil.rmtree, os.path.dirname(sock_path), True)
        return broker
    raise RuntimeError(f"could not find a free port for mosquitto; log:\n{broker.log_tail()}")


def start_configured(workdir: Path, render: Callable[[int], str]) -> Broker:
    """Start mosquitto on a whole config the caller renders for a free loopback port (its
    listener must be ``127.0.0.1:<port>``): for configs we do not write here, such as the box
    broker's generated one or the central broker's example."""
    if not MOSQUITTO.exists():
        raise FileNotFoundError(f"{MOSQUITTO} is missing: apt-get install mosquitto")
    workdir.mkdir(parents=True, exist_ok=True)
    conf_path, log_path = workdir / "mosquitto.conf", workdir / "mosquitto.log"
    for _attempt in range(3):
        port = free_port()
        conf_path.write_text(render(port))
        url = f"mqtt://127.0.0.1:{port}"
        broker = Broker(url, port, None, _spawn(conf_path, log_path), conf_path, log_path)
        try:
            _wait_ready(broker)
        except RuntimeError:
            broker.kill()
            if "Address already in use" in broker.log_tail():
                continue  # lost the free-port race; try another port
            raise
        return broker
    raise RuntimeError(f"could not find a free port for mosquitto; log:\n{broker.log_tail()}")


def _listener(workdir: Path, unix: bool) -> tuple[int | None, str | None, str]:
    if not unix:
        port = free_port()
        return port, None, f"listener {port} 127.0.0.1"
    path = str(workdir / "mosquitto.sock")
    if len(path) > UNIX_PATH_MAX:
        path = os.path.join(tempfile.mkdtemp(prefix="edge-mq-"), "mosquitto.sock")
    return None, path, f"listener 0 {path}"


def _config(listener: str, extra_conf: str) -> str:
    lines = [
        listener,
        "allow_anonymous true",
        "persistence false",
        # As on the box: without it mosquitto's Nagle delays add ~40 ms per hop on loopback.
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # else mosquitto drops to 'mosquitto', which may not exist
    return "\n".join([*lines, extra_conf, ""])


def _spawn(conf_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [str(MOSQUITTO), "-c", str(conf_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def _wait_ready(broker: Broker) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if not broker.running:
            raise RuntimeError(
                f"mosquitto exited with code {broker.proc.returncode} "
                f"(config {broker.conf_path}); log:\n{broker.log_tail()}"
            )
        if _accepts(broker):
            return
        time.sleep(0.02)
    raise RuntimeError(
        f"mosquitto did not accept connections on {broker.url} within {READY_TIMEOUT:g} s; "
        f"log:\n{broker.log_tail()}"
    )


def _accepts(broker: Broker) -> bool:
    if broker.socket_path:
        family, address = socket.AF_UNIX, broker.socket_path
        with socket.socket(family, socket.SOCK_STREAM) as s:
            return s.connect_ex(address) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", broker.port or 0)) == 0
