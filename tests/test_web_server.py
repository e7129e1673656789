"""The local web server's HTTP layer on a real port: page, auth, throttling, WHEP, headers.

The live hub is a small recording stand-in (the WebRTC side is tested with the real hub and a
real browser elsewhere); credentials, aiohttp and the sockets are the real ones. Most tests
ask for plain HTTP explicitly; the HTTPS default has its own tests.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from support.pki import new_authority

from edge.config.live import WebConfig
from edge.errors import ConfigError
from edge.video.live.api import REFUSAL_CODES, LiveHubApi, LiveRefused
from edge.web import server as server_module
from edge.web.credentials import Credentials, set_password
from edge.web.server import MAX_OFFER, WebServer

PASSWORD = "correct horse battery"


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


GOOD = basic("installer", PASSWORD)
BAD = basic("installer", "not the password")
OFFER = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
ANSWER = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=box\r\nt=0 0\r\n"
SDP = {"Content-Type": "application/sdp"}
SDP_GOOD = {**SDP, **GOOD}


class RecordingHub:
    """Answers every offer with ANSWER (or raises ``refuse``) and records what it was asked."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str, str, str]] = []
        self.closed: list[tuple[str, str]] = []
        self.sessions: dict[str, str] = {}
        self.refuse: LiveRefused | None = None
        self.refusals: list[tuple[str, str, str, str]] = []
        self.audits: list[dict[str, Any]] = []
        self.owners: dict[str, str] = {}

    def refused(
        self, camera: str, operator: str, exc: LiveRefused, *, via: Any, remote: str = ""
    ) -> None:
        self.refusals.append((camera, operator, exc.code, via))

    def audit(self, body: dict[str, Any]) -> None:
        self.audits.append(body)

    def describe(self) -> dict[str, Any]:
        return {
            "site": "t-site",
            "cameras": [{"id": "door", "name": "Door", "up": True, "viewers": 0, "cap": 4}],
            "outputs": ["siren"],
        }

    async def open_lan(
        self, camera: str, offer_sdp: str, *, user: str, remote: str
    ) -> tuple[str, str]:
        self.opened.append((camera, offer_sdp, user, remote))
        if self.refuse is not None:
            raise self.refuse
        session = f"sess{len(self.opened)}"
        self.sessions[session] = camera
        self.owners[session] = f"lan:{user}"
        return session, ANSWER

    async def close(self, session: str, why: str) -> bool:
        self.closed.append((session, why))
        return self.sessions.pop(session, None) is not None

    def session_owner(self, session: str) -> tuple[str, str] | None:
        camera = self.sessions.get(session)
        return (camera, self.owners[session]) if camera else None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def web_config(users: Path, **changes: Any) -> WebConfig:
    # port 0 (not valid in site.toml) lets the OS choose a free port for the test
    base = WebConfig(listen="127.0.0.1", credentials_file=str(users), https=False)
    return base.model_copy(update={"port": 0, **changes})


@pytest.fixture
def users(tmp_path: Path) -> Path:
    path = tmp_path / "secrets" / "web-users"
    set_password(path, "installer", PASSWORD)
    return path


@contextlib.asynccontextmanager
async def serve(
    cfg: WebConfig, hub: LiveHubApi, clock: Clock | None = None
) -> AsyncIterator[tuple[WebServer, aiohttp.ClientSession]]:
    server = WebServer(cfg, hub, site_id="t-site", clock=clock or Clock())
    await server.start()
    try:
        async with aiohttp.ClientSession(base_url=server.url) as http:
            yield server, http
    finally:
        await server.stop()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def assert_safe_headers(resp: aiohttp.ClientResponse) -> None:
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_page_and_its_files_need_no_login(users: Path) -> None:
    async def scenario() -> None:
        async with serve(web_config(users), RecordingHub()) as (_, http):
            async with http.get("/") as resp:
                page = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html"
                assert_safe_headers(resp)
                csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "default-src 'none'" in csp
            assert "unsafe-inline" not in csp
            assert '<script src="/static/viewer.js"' in page and "<script>" not in page
            assert 'id="video" autoplay muted playsinline' in page
            async with http.get("/static/viewer.js") as resp:
                script = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/javascript"
            for name in ("edgeLogin", "edgeWatch", "edgeAction", "edgeStop"):
                assert f"window.{name} =" in script
            async with http.get("/static/viewer.css") as resp:
                assert resp.status == 200 and resp.content_type == "text/css"
            for missing in ("/static/nothing.js", "/static/..%2Fcredentials.py", "/nowhere"):
                async with http.get(missing) as resp:
                    assert resp.status == 404, missing
                    assert_safe_headers(resp)

    run(scenario())


def test_api_needs_the_right_password(users: Path, caplog: pytest.LogCaptureFixture) -> None:
    hub = RecordingHub()

    async def scenario() -> None:
        async with serve(web_config(users), hub) as (_, http):
            for auth in ({}, BAD, basic("nobody", PASSWORD)):
                async with http.get("/api/site", headers=auth) as resp:
                    assert resp.status == 401
                    assert resp.headers["WWW-Authenticate"] == 'Basic realm="edge t-site"'
                    assert_safe_headers(resp)
            async with http.get("/api/site", headers={"Authorization": "Basic !!!"}) as resp:
                assert resp.status == 401
            async with http.get("/api/site", headers=GOOD) as resp:
                assert resp.status == 200
                assert (await resp.json())["cameras"][0]["id"] == "door"
                assert_safe_headers(resp)

    with caplog.at_level(logging.INFO, logger="edge.web.server"):
        run(scenario())
    lines = [r.getMessage() for r in caplog.records]
    assert any("installer GET /api/site -> 200" in line for line in lines), lines
    # Refused logins are not one line each: the first is reported, the rest summarised.
    assert not any("-> 401" in line for line in lines), lines
    assert not any(PASSWORD in line or "not the password" in line for line in lines)
    first, summary = hub.audits
    assert (first["count"], first["users"], first["remote"]) == (1, ["(none)"], "127.0.0.1")
    assert summary["count"] == 3 and summary["users"] == ["installer", "nobody", "(unreadable)"]
    assert summary["code"] == "unauthorised" and summary["via"] == "lan"
    assert "3 refused login(s) from 127.0.0.1" in summary["reason"]
    assert "camera" not in summary  # none was asked for


def test_no_users_file_refuses_everything_with_the_hint(tmp_path: Path) -> None:
    async def scenario() -> None:
        cfg = web_config(tmp_path / "missing" / "web-users")
        async with serve(cfg, RecordingHub()) as (_, http):
            async with http.get("/") as resp:
                assert resp.status == 200  # the page itself loads, to show the message
            for auth in ({}, GOOD):
                async with http.get("/api/site", headers=auth) as resp:
                    assert resp.status == 503
                    assert "run `edge web passwd USER` on the box" in await resp.text()
            set_password(tmp_path / "missing" / "web-users", "installer", PASSWORD)
            async with http.get("/api/site", headers=GOOD) as resp:
                assert resp.status == 200  # taken into account without a restart

    run(scenario())


def test_too_many_failures_wait_a_minute_even_with_the_right_password(users: Path) -> None:
    clock = Clock()
    hub = RecordingHub()

    async def scenario() -> None:
        cfg = web_config(users, max_failures_per_minute=3)
        async with serve(cfg, hub, clock) as (_, http):
            for _ in range(4):
                async with http.get("/api/site", headers=BAD) as resp:
                    assert resp.status == 401
            clock.now += 20
            async with http.get("/api/site", headers=GOOD) as resp:
                assert resp.status == 429
                assert resp.headers["Retry-After"] == "40"
                assert "too many failed logins from 127.0.0.1" in await resp.text()
            async with http.post("/whep/door", data=OFFER, headers=SDP_GOOD) as resp:
                assert resp.status == 429
            assert hub.opened == []
            clock.now += 40.5
            async with http.get("/api/site", headers=GOOD) as resp:
                assert resp.status == 200

    run(scenario())
    # Audited as two rows: the first refusal at once, the others summarised at the stop.
    first, summary = hub.audits
    assert first["count"] == 1 and first["operator"] == "lan:installer"
    assert summary["count"] == 5 and summary["camera"] == "door"
    assert "401 unauthorised ×3, 429 waiting after failures ×2" in summary["reason"]
    assert summary["start"] <= summary["end"]


def test_whep_offer_answer_and_delete(users: Path) -> None:
    hub = RecordingHub()

    async def scenario() -> None:
        async with serve(web_config(users), hub) as (_, http):
            async with http.post("/whep/door", data=OFFER, headers=SDP_GOOD) as resp:
                assert resp.status == 201
                assert resp.headers["Content-Type"] == "application/sdp"
                assert resp.headers["Location"] == "/whep/door/sess1"
                assert await resp.text() == ANSWER
                assert_safe_headers(resp)
            assert hub.opened == [("door", OFFER, "installer", "127.0.0.1")]
            async with http.delete("/whep/yard/sess1", headers=GOOD) as resp:
                assert resp.status == 404  # not that camera's session
                assert await resp.text() == "no live session sess1 on camera yard\n"
            assert hub.closed == []
            async with http.delete("/whep/door/sess1") as resp:
                assert resp.status == 401
            async with http.delete("/whep/door/sess1", headers=GOOD) as resp:
                assert resp.status == 200
            assert hub.closed == [("sess1", "stopped by installer")]
            async with http.delete("/whep/door/sess1", headers=GOOD) as resp:
                assert resp.status == 404

    run(scenario())


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("unknown_camera", 404),
        ("viewer_cap", 503),
        ("policy", 403),
        ("unauthorised", 403),
        ("disabled", 503),
        ("bad_offer", 400),
        ("busy", 503),
    ],
)
def test_refusals_map_to_http_status(users: Path, code: str, status: int) -> None:
    assert code in REFUSAL_CODES
    hub = RecordingHub()
    hub.refuse = LiveRefused(code, f"refused because {code}")

    async def scenario() -> None:
        async with (
            serve(web_config(users), hub) as (_, http),
            http.post("/whep/door", data=OFFER, headers=SDP_GOOD) as resp,
        ):
            assert resp.status == status
            assert resp.content_type == "text/plain"
            assert await resp.text() == f"refused because {code}\n"
            assert resp.headers.get("Retry-After") == ("10" if code == "viewer_cap" else None)
            assert "Location" not in resp.headers

    run(scenario())


class SilentHub(RecordingHub):
    """A hub that never answers (edge-video stuck)."""

    async def open_lan(
        self, camera: str, offer_sdp: str, *, user: str, remote: str
    ) -> tuple[str, str]:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_a_hub_that_does_not_answer_gives_503(users: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_module, "OPEN_TIMEOUT_S", 0.2)

    async def scenario() -> None:
        async with (
            serve(web_config(users), SilentHub()) as (_, http),
            http.post("/whep/door", data=OFFER, headers=SDP_GOOD) as resp,
        ):
            assert resp.status == 503
            assert await resp.text() == "live view did not answer in time: try again\n"

    run(scenario())


def test_bad_requests(users: Path) -> None:
    hub = RecordingHub()

    async def scenario() -> None:
        async with serve(web_config(users), hub) as (_, http):
            text = {"Content-Type": "text/plain"}
            async with http.post("/whep/door", data=OFFER, headers={**text, **GOOD}) as resp:
                assert resp.status == 415
                assert "Content-Type: application/sdp" in await resp.text()
            async with http.post("/whep/door", data=OFFER, headers=text) as resp:
                assert resp.status == 401  # who asks is checked before what is asked
            big = "a=x\r\n" * (MAX_OFFER // 5 + 1)
            async with http.post("/whep/door", data=big, headers=SDP_GOOD) as resp:
                assert resp.status == 413
            async with http.post("/whep/door", data=" ", headers=SDP_GOOD) as resp:
                assert resp.status == 400
            for path, allow in (("/whep/door", "POST"), ("/whep/door/sess1", "DELETE")):
                async with http.patch(path, data="a=candidate:1", headers=GOOD) as resp:
                    assert resp.status == 405 and resp.headers["Allow"] == allow
                    assert "trickle ICE is not supported" in await resp.text()
            async with http.get("/whep/door", headers=GOOD) as resp:
                assert resp.status == 405
        assert hub.opened == []

    run(scenario())


def test_busy_port_is_a_config_error(users: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            server = WebServer(web_config(users, port=port), RecordingHub(), site_id="t-site")
            with pytest.raises(ConfigError) as err:
                await server.start()
        message = str(err.value)
        assert f"web.listen / web.port: cannot listen on 127.0.0.1:{port}" in message
        assert "address already in use" in message.lower() and "choose another web.port" in message
        elsewhere = WebServer(web_config(users, listen="192.0.2.1"), RecordingHub(), site_id="x")
        with pytest.raises(ConfigError, match=r"web\.listen must be an address of this box"):
            await elsewhere.start()

    run(scenario())


def test_https_with_tls_cert_and_key(users: Path, tmp_path: Path) -> None:
    ca = new_authority(tmp_path / "pki")
    files = ca.issue("web", "localhost", server=True)
    cfg = web_config(users, https=True, tls_cert=str(files.cert), tls_key=str(files.key))

    async def scenario() -> None:
        server = WebServer(cfg, RecordingHub(), site_id="t-site")
        await server.start()
        try:
            assert server.url.startswith("https://127.0.0.1:")
            trust = ssl.create_default_context(cafile=str(ca.ca_file))
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{server.url}/api/site", headers=GOOD, ssl=trust) as resp,
            ):
                assert resp.status == 200
        finally:
            await server.stop()
        broken = web_config(users, https=True, tls_cert=str(files.key), tls_key=str(files.key))
        with pytest.raises(ConfigError, match=r"web\.tls_cert / web\.tls_key: cannot load"):
            await WebServer(broken, RecordingHub(), site_id="t-site").start()

    run(scenario())


def test_https_by_default_with_the_box_own_certificate(users: Path) -> None:
    """No tls_cert: a self-signed ECDSA P-256 certificate is made beside the users file at
    first start (a secret file, 0600) and kept; the fingerprint the client sees is the one
    `edge web cert` shows."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from edge.web.tls import fingerprint

    cfg = WebConfig(listen="127.0.0.1", credentials_file=str(users)).model_copy(update={"port": 0})
    pem_file = users.parent / "web-tls.pem"

    async def fetch_peer() -> tuple[str, bytes]:
        server = WebServer(cfg, RecordingHub(), site_id="t-site")
        await server.start()
        try:
            assert server.url.startswith("https://127.0.0.1:")
            insecure = ssl.create_default_context()
            insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
            _, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=insecure)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{server.url}/api/site", headers=GOOD, ssl=insecure) as resp,
            ):
                assert resp.status == 200
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"http://127.0.0.1:{server.port}/", ssl=False) as resp,
            ):
                raise AssertionError(f"plain HTTP answered {resp.status}")
        except aiohttp.ClientError:
            return server.url, der
        finally:
            await server.stop()

    _, der = run(fetch_peer())
    assert stat.S_IMODE(pem_file.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert cert.public_bytes(serialization.Encoding.DER) == der
    shown = fingerprint(pem_file.read_bytes())
    assert shown == ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
    before = pem_file.read_bytes()
    run(fetch_peer())  # a restart keeps the certificate (the installer checked it once)
    assert pem_file.read_bytes() == before


def test_a_certificate_others_may_read_is_refused(users: Path) -> None:
    cfg = WebConfig(listen="127.0.0.1", credentials_file=str(users)).model_copy(update={"port": 0})
    pem_file = users.parent / "web-tls.pem"

    async def start() -> None:
        server = WebServer(cfg, RecordingHub(), site_id="t-site")
        await server.start()
        await server.stop()

    run(start())
    pem_file.chmod(0o644)
    with pytest.raises(ConfigError, match=f"chmod 600 {pem_file}"):
        run(start())


def test_only_the_owner_of_a_session_can_end_it(users: Path) -> None:
    set_password(users, "tech", "another good passphrase")
    hub = RecordingHub()
    tech = basic("tech", "another good passphrase")

    async def scenario() -> None:
        async with serve(web_config(users), hub) as (_, http):
            async with http.post("/whep/door", data=OFFER, headers=SDP_GOOD) as resp:
                assert resp.status == 201
            async with http.delete("/whep/door/sess1", headers=tech) as resp:
                assert resp.status == 403
                assert "only the user who opened it" in await resp.text()
            assert hub.closed == []
            hub.sessions["central-1"], hub.owners["central-1"] = "door", "op-17"
            async with http.delete("/whep/door/central-1", headers=GOOD) as resp:
                assert resp.status == 403  # a central station session is not the LAN's
            async with http.delete("/whep/door/sess1", headers=GOOD) as resp:
                assert resp.status == 200
            assert hub.closed == [("sess1", "stopped by installer")]

    run(scenario())


def test_verification_is_remembered_until_the_file_changes(users: Path) -> None:
    creds = Credentials(users)

    async def scenario() -> None:
        server = WebServer(web_config(users), RecordingHub(), site_id="t-site", credentials=creds)
        await server.start()
        try:
            async with aiohttp.ClientSession(base_url=server.url) as http:
                async with http.get("/api/site", headers=GOOD) as resp:
                    assert resp.status == 200
                set_password(users, "installer", "a changed password")
                async with http.get("/api/site", headers=GOOD) as resp:
                    assert resp.status == 401
        finally:
            await server.stop()

    run(scenario())
