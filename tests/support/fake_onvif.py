"""A fake ONVIF PTZ camera at the network boundary: a threaded HTTP server speaking SOAP 1.2.

It checks the WS-Security UsernameToken digest against its own password (computed here, not
with the client's helper), answers GetPresets, records every GotoPreset, answers a SOAP Fault
for an unknown preset and HTTP 401 for bad credentials. ``raw_response`` replaces the next
answers (hostile or broken cameras); ``requests`` counts every request that reached it.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SOAP = "http://www.w3.org/2003/05/soap-envelope"
PTZ = "http://www.onvif.org/ver20/ptz/wsdl"
TT = "http://www.onvif.org/ver10/schema"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"


def envelope(body: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP}" '
        f'xmlns:tptz="{PTZ}" xmlns:tt="{TT}" xmlns:ter="http://www.onvif.org/ver10/error">'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def fault(text: str, *subcodes: str) -> bytes:
    sub = "".join(f"<s:Subcode><s:Value>{c}</s:Value>" for c in subcodes)
    sub += "</s:Subcode>" * len(subcodes)
    return envelope(
        f"<s:Fault><s:Code><s:Value>s:Sender</s:Value>{sub}</s:Code>"
        f'<s:Reason><s:Text xml:lang="en">{text}</s:Text></s:Reason></s:Fault>'
    )


class FakeOnvifCamera:
    """``with FakeOnvifCamera(username="admin", password="pw") as cam: cam.url ...``"""

    def __init__(
        self,
        *,
        username: str = "admin",
        password: str = "secret",
        presets: dict[str, str] | None = None,
        profile_token: str = "Profile_1",
    ) -> None:
        self.username, self.password, self.profile_token = username, password, profile_token
        self.presets = (
            presets if presets is not None else {"1": "Gate", "2": "Car park", "3": "Door"}
        )
        self.gotos: list[tuple[str, str]] = []
        self.requests = 0
        self.security_seen: list[bool] = []
        self.raw_response: bytes | None = None
        self.delay_s = 0.0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/onvif/ptz_service"

    def __enter__(self) -> FakeOnvifCamera:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # -- request handling (server threads) ---------------------------------------------------

    def answer(self, body: bytes) -> tuple[int, bytes]:
        with self._lock:
            self.requests += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.raw_response is not None:
            return 200, self.raw_response
        root = ET.fromstring(body)
        token = root.find(f"{{{SOAP}}}Header/{{{WSSE}}}Security/{{{WSSE}}}UsernameToken")
        with self._lock:
            self.security_seen.append(token is not None)
        if self.username and not self._authentic(token):
            return 401, b"Unauthorized"
        request = root.find(f"{{{SOAP}}}Body/*")
        if request is None:
            return 400, fault("empty body")
        return self._operation(request)

    def _authentic(self, token: ET.Element | None) -> bool:
        if token is None:
            return False
        user = token.findtext(f"{{{WSSE}}}Username")
        digest = token.findtext(f"{{{WSSE}}}Password") or ""
        nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
        created = token.findtext(f"{{{WSU}}}Created") or ""
        raw = hashlib.sha1(nonce + created.encode() + self.password.encode()).digest()
        return user == self.username and digest == base64.b64encode(raw).decode()

    def _operation(self, request: ET.Element) -> tuple[int, bytes]:
        profile = request.findtext(f"{{{PTZ}}}ProfileToken") or ""
        if profile != self.profile_token:
            return 400, fault(f"no profile {profile}", "ter:InvalidArgVal", "ter:NoProfile")
        if request.tag == f"{{{PTZ}}}GetPresets":
            items = "".join(
                f'<tptz:Preset token="{t}"><tt:Name>{n}</tt:Name></tptz:Preset>'
                for t, n in self.presets.items()
            )
            return 200, envelope(f"<tptz:GetPresetsResponse>{items}</tptz:GetPresetsResponse>")
        if request.tag == f"{{{PTZ}}}GotoPreset":
            preset = request.findtext(f"{{{PTZ}}}PresetToken") or ""
            if preset not in self.presets:
                return 400, fault(
                    f"preset {preset} does not exist", "ter:InvalidArgVal", "ter:NoToken"
                )
            with self._lock:
                self.gotos.append((profile, preset))
            return 200, envelope("<tptz:GotoPresetResponse/>")
        return 400, fault("action not supported", "ter:ActionNotSupported")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                status, data = camera.answer(self.rfile.read(length))
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler
