"""`edge run broker`: writes the box broker's configuration and becomes mosquitto."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from support.alarm import write_site
from support.broker import free_port

EDGE = str(Path(sys.executable).with_name("edge"))


def test_run_broker_without_identities_says_how_to_make_them(tmp_path: Path) -> None:
    site = write_site(tmp_path, f"mqtt://127.0.0.1:{free_port()}", identities=tmp_path / "ids")
    out = subprocess.run(
        [EDGE, "run", "broker", "--config", str(site)], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 78, out.stderr
    assert "edge bus init" in out.stderr and "Traceback" not in out.stderr


def test_run_broker_generates_its_config_and_serves_the_bus(tmp_path: Path) -> None:
    port = free_port()
    site = write_site(tmp_path, f"mqtt://127.0.0.1:{port}", identities=tmp_path / "ids")
    init = subprocess.run(
        [EDGE, "bus", "init", "--config", str(site)], capture_output=True, text=True, timeout=20
    )
    assert init.returncode == 0 and "edge-alarm" in init.stdout, init.stderr
    again = subprocess.run(
        [EDGE, "bus", "init", "--config", str(site)], capture_output=True, text=True, timeout=20
    )
    assert "already exists" in again.stdout  # never replaces a password
    proc = subprocess.Popen(
        [EDGE, "run", "broker", "--config", str(site)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the broker did not listen"
            time.sleep(0.1)
        conf = (tmp_path / "run" / "mosquitto.conf").read_text()
        assert f"listener {port} 127.0.0.1" in conf
        assert "set_tcp_nodelay true" in conf and "connection " not in conf  # no [central]
        assert "allow_anonymous false" in conf and "use_username_as_clientid true" in conf
        acl = (tmp_path / "run" / "broker.acl").read_text()
        assert "user edge-alarm" in acl and "user installer" in acl
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert cmdline[0].endswith(b"mosquitto")  # exec'd: systemd sees mosquitto itself
    finally:
        proc.terminate()
        proc.wait(10)


def _publish_as(port: int, user: str, password: str, topic: str) -> int:
    """Reason code of one QoS 1 publish as ``user``; -1 when the CONNECT is refused."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, password)
    codes: list[int] = []
    client.on_connect = lambda _c, _u, _f, rc, _p: codes.append(-1 if rc.is_failure else 0)
    client.on_publish = lambda _c, _u, _m, rc, _p: codes.append(rc.value)
    client.connect("127.0.0.1", port)
    deadline = time.monotonic() + 5
    while not codes and time.monotonic() < deadline:
        client.loop(0.05)
    if codes == [0]:
        client.publish(topic, b"{}", qos=1)
        while len(codes) < 2 and time.monotonic() < deadline:
            client.loop(0.05)
    client.disconnect()
    return codes[-1]


def test_a_person_added_while_the_broker_runs_acts_on_reload(tmp_path: Path) -> None:
    port = free_port()
    site = write_site(tmp_path, f"mqtt://127.0.0.1:{port}", identities=tmp_path / "ids")
    run = [EDGE, "bus"]
    assert subprocess.run([*run, "init", "--config", str(site)], timeout=20).returncode == 0
    proc = subprocess.Popen([EDGE, "run", "broker", "--config", str(site)])
    try:
        _wait_listening(port, proc)
        added = subprocess.run(
            [*run, "passwd", "alice", "--config", str(site)], capture_output=True, text=True
        )
        assert added.returncode == 0 and "reload" in added.stdout, added.stderr
        password = (tmp_path / "ids" / "alice").read_text().strip()
        proc.send_signal(signal.SIGHUP)  # systemctl reload edge-broker
        time.sleep(0.5)
        assert _publish_as(port, "alice", password, "edge/local/alice/cmd") in (0, 0x10)
        assert _publish_as(port, "alice", password, "edge/local/installer/cmd") == 0x87
        assert _publish_as(port, "alice", "guess", "edge/local/alice/cmd") == -1
        subprocess.run([*run, "remove", "alice", "--config", str(site)], check=True)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert _publish_as(port, "alice", password, "edge/local/alice/cmd") == -1
    finally:
        proc.terminate()
        proc.wait(10)


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert proc.poll() is None and time.monotonic() < deadline, "the broker did not listen"
        time.sleep(0.1)
