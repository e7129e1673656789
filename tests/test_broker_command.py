"""`edge run broker`: writes the box broker's configuration and becomes mosquitto."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

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
