"""A minimal ONVIF PTZ client: list presets and go to one, nothing else.

Why our own and not an ONVIF library: two SOAP calls do not justify a WSDL toolkit and its
dependencies on the box. Standard library only (urllib, xml.etree); the calls block, so async
code runs them with ``asyncio.to_thread``. Camera answers are untrusted input: the body is
capped at 256 KB and any DTD is refused before parsing (defusedxml is not available, and a DTD
is the only door to entity expansion in xml.etree). Environment proxies are ignored: a camera
is on the site's LAN, never behind the box's HTTP proxy.

Every failure raises :class:`OnvifError` whose ``code`` the live tele-action reply carries:
``not_allowed``, ``config``, ``unreachable``, ``auth``, ``fault``, ``http``, ``bad_response``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape

from edge.config.video import Onvif
from edge.errors import EdgeError
from edge.secret_files import SecretFileError, read_secret

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 256 * 1024
SOAP_ENV = "http://www.w3.org/2003/05/soap-envelope"
PTZ_NS = "http://www.onvif.org/ver20/ptz/wsdl"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
BASE64 = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)
_AUTH_SUBCODES = ("NotAuthorized", "FailedAuthentication", "InvalidSecurity")
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class OnvifError(EdgeError, RuntimeError):
    """A PTZ request that did not succeed; ``code`` is short, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def password_digest(nonce: bytes, created: str, password: str) -> str:
    """WS-Security UsernameToken digest: Base64(SHA1(nonce + created + password))."""
    raw = hashlib.sha1(nonce + created.encode("utf-8") + password.encode("utf-8"))
    return base64.b64encode(raw.digest()).decode("ascii")


def goto_preset(onvif: Onvif, preset: str) -> None:
    """Move the camera to ``preset``; refused before any request when not in the allow-list."""
    if onvif.presets and preset not in onvif.presets:
        allowed = ", ".join(onvif.presets)
        raise OnvifError(
            "not_allowed",
            f"preset {preset!r} is not allowed on this camera (allowed: {allowed}); the "
            "installer adds it to presets in the camera's [onvif] block of site.toml",
        )
    body = (
        f"<tptz:GotoPreset><tptz:ProfileToken>{escape(onvif.profile_token)}</tptz:ProfileToken>"
        f"<tptz:PresetToken>{escape(preset)}</tptz:PresetToken></tptz:GotoPreset>"
    )
    _call(onvif, "GotoPreset", body)


def get_presets(onvif: Onvif) -> list[tuple[str, str]]:
    """``(token, name)`` of every preset of the configured profile, in the camera's order."""
    body = (
        f"<tptz:GetPresets><tptz:ProfileToken>{escape(onvif.profile_token)}"
        "</tptz:ProfileToken></tptz:GetPresets>"
    )
    root = _call(onvif, "GetPresets", body)
    presets = []
    for el in root.iter():
        if _local(el.tag) == "Preset" and el.get("token"):
            name = next((c.text or "" for c in el if _local(c.tag) == "Name"), "")
            presets.append((str(el.get("token")), name.strip()))
    return presets


# -- SOAP over HTTP -------------------------------------------------------------------------


def _call(onvif: Onvif, operation: str, body: str) -> ET.Element:
    envelope = (
        f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{SOAP_ENV}" '
        f'xmlns:tptz="{PTZ_NS}"><s:Header>{_security(onvif)}</s:Header>'
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()
    headers = {
        "Content-Type": f'application/soap+xml; charset=utf-8; action="{PTZ_NS}/{operation}"'
    }
    req = urllib.request.Request(onvif.url, data=envelope, headers=headers, method="POST")
    where = f"ONVIF camera at {onvif.url}"
    try:
        with _NO_PROXY.open(req, timeout=onvif.timeout_s) as resp:
            data = _read(resp, where)
    except urllib.error.HTTPError as exc:
        raise _http_error(exc, where, onvif) from None
    except urllib.error.URLError as exc:
        raise OnvifError(
            "unreachable",
            f"{where} is unreachable ({exc.reason}): check that it is powered, on the "
            "network, and that the url in its [onvif] block is right",
        ) from None
    except (TimeoutError, http.client.HTTPException, OSError) as exc:
        raise OnvifError(
            "unreachable",
            f"{where} did not answer properly within {onvif.timeout_s:g} s ({exc or 'timeout'}): "
            "check the camera and its network link",
        ) from None
    root = _parse(data, where)
    fault = _fault(root)
    if fault is not None:
        raise _fault_error(fault, where, onvif)
    return root


def _security(onvif: Onvif) -> str:
    """The UsernameToken header, or nothing when no user is configured."""
    if not onvif.username:
        return ""
    password = _password(onvif)
    nonce = os.urandom(16)
    created = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return (
        f'<wsse:Security s:mustUnderstand="1" xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}">'
        f"<wsse:UsernameToken><wsse:Username>{escape(onvif.username)}</wsse:Username>"
        f'<wsse:Password Type="{DIGEST}">{password_digest(nonce, created, password)}'
        f'</wsse:Password><wsse:Nonce EncodingType="{BASE64}">'
        f"{base64.b64encode(nonce).decode('ascii')}</wsse:Nonce>"
        f"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"
    )


def _password(onvif: Onvif) -> str:
    if onvif.password_file is None:
        return ""
    try:
        data = read_secret(Path(onvif.password_file), "ONVIF password file", max_bytes=1024)
        return data.decode("utf-8").rstrip("\r\n")
    except (SecretFileError, UnicodeDecodeError) as exc:
        raise OnvifError(
            "config",
            f"cannot read the ONVIF password file {onvif.password_file} ({exc}); create it "
            "(mode 0600, the password on one line) or fix password_file in the [onvif] block",
        ) from None


def _read(resp: http.client.HTTPResponse, where: str) -> bytes:
    data = resp.read(MAX_RESPONSE_BYTES + 1)
    if len(data) > MAX_RESPONSE_BYTES:
        raise OnvifError(
            "bad_response",
            f"{where} answered more than {MAX_RESPONSE_BYTES // 1024} KB: "
            "check that the url points to its ONVIF PTZ service",
        )
    return bytes(data)


def _parse(data: bytes, where: str) -> ET.Element:
    if b"<!doctype" in data.lower() or b"<!entity" in data.lower():
        raise OnvifError(
            "bad_response",
            f"{where} answered with a DTD, which is refused (entity expansion): "
            "check that the url points to its ONVIF PTZ service",
        )
    try:
        return ET.fromstring(data)
    except ET.ParseError as exc:
        raise OnvifError(
            "bad_response",
            f"{where} did not answer SOAP XML ({exc}): check that the url points to its "
            "ONVIF PTZ service",
        ) from None


def _http_error(exc: urllib.error.HTTPError, where: str, onvif: Onvif) -> OnvifError:
    """An HTTP error status: a SOAP Fault inside explains it best, else the status does."""
    try:
        data = exc.read(MAX_RESPONSE_BYTES + 1)
    except OSError:
        data = b""
    if exc.code in (401, 403):
        return OnvifError("auth", _refused(where))
    if data and len(data) <= MAX_RESPONSE_BYTES:
        try:
            fault = _fault(_parse(data, where))
        except OnvifError:
            fault = None
        if fault is not None:
            return _fault_error(fault, where, onvif)
    return OnvifError(
        "http",
        f"{where} answered HTTP {exc.code} {exc.reason}: check that the url is its ONVIF PTZ "
        "service (often /onvif/ptz_service) and that PTZ is enabled on the camera",
    )


def _refused(where: str) -> str:
    return (
        f"{where} refused the credentials: check the username and the password file of its "
        "[onvif] block, and that the camera's clock is within a few minutes of the box's"
    )


def _fault(root: ET.Element) -> tuple[list[str], str] | None:
    """``(subcodes, reason text)`` of a SOAP Fault (1.2, or 1.1's faultstring), else None."""
    fault = next((el for el in root.iter() if _local(el.tag) == "Fault"), None)
    if fault is None:
        return None
    codes = [(el.text or "").strip() for el in fault.iter() if _local(el.tag) == "Value"]
    texts = [
        (el.text or "").strip()
        for el in fault.iter()
        if _local(el.tag) in ("Text", "faultstring") and (el.text or "").strip()
    ]
    return codes, (texts[0] if texts else "no reason given")


def _fault_error(fault: tuple[list[str], str], where: str, onvif: Onvif) -> OnvifError:
    codes, text = fault
    if any(c.rsplit(":", 1)[-1] in _AUTH_SUBCODES for c in codes):
        return OnvifError("auth", _refused(where))
    detail = "/".join(c.rsplit(":", 1)[-1] for c in codes if c)
    return OnvifError(
        "fault",
        f"{where} refused the request (profile {onvif.profile_token}): {text[:200]}"
        + (f" [{detail[:80]}]" if detail else "")
        + "; check the preset and profile_token against the camera's own configuration",
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]
