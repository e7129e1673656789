"""edge-alarm without OpenSSL: plain sockets through paho still behave."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import socket, sys
from edge.alarm.lean import without_openssl
assert without_openssl()
import hashlib, paho.mqtt.client as mqtt
assert "ssl" not in [m for m, v in sys.modules.items() if v is not None]
# Built-in SHA-256 gives the standard digest.
assert hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf")
a, b = socket.socketpair()
a.setblocking(False)
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client._sock = a
try:
    client._sock_recv(1)
except BlockingIOError:
    print("would block")
b.send(b"x")
print(client._sock_recv(1))
"""


def test_paho_reads_plain_sockets_without_ssl() -> None:
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["would", "block", "b'x'"]


def test_nothing_is_blocked_once_openssl_is_loaded() -> None:
    code = "import ssl; from edge.alarm.lean import without_openssl; print(without_openssl())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_paho_runs_without_dnspython_in_lean_mode() -> None:
    """dnspython is installed (live view needs it) but edge-alarm's paho must not load it."""
    code = (
        "import sys; from edge.alarm.lean import without_openssl; without_openssl();"
        "import dns as _  # noqa\n"
    )
    blocked = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert blocked.returncode != 0 and "ModuleNotFoundError" in blocked.stderr
    code = (
        "import sys; from edge.alarm.lean import without_openssl; without_openssl();"
        "import paho.mqtt.client as c; import edge.alarm.service;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'dns' and sys.modules[m]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
