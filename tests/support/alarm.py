"""Run the real `edge run alarm` as a subprocess and watch the box bus, for tests and benches.

The peers are real: a mosquitto started by the caller, a paho subscriber independent of our
bus module, and a datagram socket standing in for systemd's NOTIFY_SOCKET.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[2]

SITE = """
[site]
id = "{site_id}"
name = "Test site"

[paths]
data_dir = "{data}"
run_dir = "{run}"

[bus]
url = "{url}"
{identities}

[hardware]
backend = "sim"

[hardware.adc]
sample_ms = {sample_ms}

[[partitions]]
id = "main"
entry_delay_s = {entry_delay}
exit_delay_s = 0
swinger_limit = {swinger}

[[zones]]
id = "door"
name = "Front door"
type = "delayed"
input = {{ kind = "gpio", pin = 17, contact = "nc", debounce_ms = {debounce} }}

[[zones]]
id = "hall"
name = "Hall PIR"
type = "instant"
input = {{ kind = "adc", channel = 0, wiring = "deol", debounce_ms = {debounce} }}

[[zones]]
id = "office"
name = "Office PIR"
type = "instant"
input = {{ kind = "gpio", pin = 22, contact = "nc", debounce_ms = {debounce} }}

[[zones]]
id = "panic"
name = "Panic button"
type = "panic"
input = {{ kind = "gpio", pin = 23, contact = "no", debounce_ms = {debounce} }}

[[zones]]
id = "lid"
name = "Box lid"
type = "box_tamper"
input = {{ kind = "gpio", pin = 27, contact = "nc", debounce_ms = {debounce} }}

[[outputs]]
id = "siren"
pin = 5

[siren]
output = "siren"
cutoff_min = 2
"""


def write_site(
    workdir: Path,
    url: str,
    *,
    debounce: int = 20,
    sample_ms: int = 10,
    entry_delay: int = 2,
    swinger: int = 3,
    extra: str = "",
    site_id: str = "test-site",
    identities: Path | None = None,
) -> Path:
    """A simulated site with one zone of each common kind; returns the TOML path.
    ``identities``: the box-bus identities directory of a generated box broker."""
    data, run = workdir / "data", workdir / "run"
    run.mkdir(parents=True, exist_ok=True)
    text = (
        SITE.format(
            data=data,
            run=run,
            url=url,
            debounce=debounce,
            sample_ms=sample_ms,
            entry_delay=entry_delay,
            swinger=swinger,
            site_id=site_id,
            identities=f'identities_dir = "{identities}"' if identities else "",
        )
        + extra
    )
    if "[web]" not in extra:
        # No local web server unless the test asks for one: its defaults live in /etc/edge
        # (users file, certificate) and port 8080, which a test must never touch.
        text += "\n[web]\nenabled = false\n"
    path = workdir / "site.toml"
    path.write_text(text, encoding="utf-8")
    return path


class NotifySocket:
    """A datagram socket playing systemd's part: collects READY=1, WATCHDOG=1, STATUS=…"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def wait_for(self, field: str, timeout: float = 10.0) -> float:
        """Monotonic time at which a datagram containing ``field`` arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            now = time.monotonic()
            self.messages.append((now, data))
            if field in data.split("\n"):
                return now
        raise TimeoutError(f"no {field} within {timeout} s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def start_alarm(
    config: Path, workdir: Path, notify: NotifySocket | None = None, log_level: str = "INFO"
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
    edge = Path(sys.executable).with_name("edge")
    log = open(workdir / "alarm.log", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(edge), "run", "alarm", "--config", str(config), "--log-level", log_level],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@dataclass
class Received:
    at: float
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class BusWatcher:
    """An independent paho client on the box broker, recording what it receives."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: tuple[str, ...] = ("edge/#",),
        session: str = "",
        auth: tuple[str, str] | None = None,
    ) -> None:
        """``session``: a client id whose session the broker keeps (1 h) across disconnects;
        ``auth``: (user, password) on a box broker that admits only its identities."""
        self.inbox: queue.Queue[Received] = queue.Queue(maxsize=100_000)
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=session, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        if auth is not None:
            self.client.username_pw_set(*auth)
        # Like the box's own clients: no Nagle delay on loopback TCP.
        self.client.on_socket_open = lambda _c, _u, sock: sock.setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        self._subscribed = queue.Queue[int]()
        self.client.on_subscribe = lambda *a: self._subscribed.put(1)
        props = None
        if session:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect(host, port, clean_start=not session, properties=props)
        self.client.loop_start()
        for t in topics:
            self.client.subscribe(t, qos=1)
            self._subscribed.get(timeout=5)

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.inbox.put(Received(time.monotonic(), msg.topic, msg.payload, bool(msg.retain)))

    def publish(self, topic: str, payload: str | bytes, qos: int = 1) -> float:
        """Publish and return the monotonic time just before the call."""
        t0 = time.monotonic()
        self.client.publish(topic, payload, qos=qos)
        return t0

    def wait(self, topic: str, timeout: float = 5.0, **match: Any) -> Received:
        """Next message on ``topic`` whose JSON payload has every key=value of ``match``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"nothing on {topic} matching {match} within {timeout} s")
            try:
                msg = self.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if msg.topic != topic:
                continue
            if match:
                body = msg.json()
                if any(body.get(k) != v for k, v in match.items()):
                    continue
            return msg

    def drain(self) -> None:
        while not self.inbox.empty():
            self.inbox.get_nowait()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
