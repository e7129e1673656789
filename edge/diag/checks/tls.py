"""TLS: the certificates' expiry, and why the bridge to the central station is down.

Certificates checked: the site's certificate and the central CA of the bridge (``[central]``
``cert_file`` and ``ca_file``), and the certificate the local web server presents (the site's
own ``web.tls_cert``, or the box's own ``web-tls.pem``). A certificate is a warning
``WARN_DAYS`` before it expires and a failure once expired or not yet valid (a box clock
that is wrong makes a good certificate look not yet valid). ``cryptography`` is imported
inside the check, never at import: edge-alarm starts without OpenSSL.

Why the bridge is down — the central broker unreachable, or the site certificate refused —
is read from the box broker's log (``journalctl -u edge-broker``, or ``run_dir/mosquitto.log``
where `edge demo` writes it), by the rule docs/bridge.md derives from what mosquitto 2.0
logs. Without a readable log, a TCP connection to the central broker tells the two apart
(reachable while the link is down: the TLS handshake is refused).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from edge.diag.checks.common import day
from edge.diag.model import Finding, fail, ok, unknown, warn
from edge.diag.registry import check
from edge.diag.sources import Sources
from edge.secret_files import FileCheckError, read_secret, read_small_file

WARN_DAYS = 30
BUNDLE = 5  # more CA certificates than this in ca_file: a system bundle, not checked one by one
LOG_TAIL_BYTES = 64 * 1024
ATTEMPTS = 6  # "Connecting bridge" lines looked at (about three attempts: step 1 and step 2)
TOOL_S = 0.3
PROBE_S = 0.3
WEB_CERT = "web-tls.pem"  # edge.web.tls.CERT_NAME (a test keeps them equal)
PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


# -- certificates ---------------------------------------------------------------------------------
@check(
    "tls.certificates",
    holdoff_s=0,
    about="expiry of the bridge's and the web server's certificates",
)
def certificates(src: Sources) -> list[Finding]:
    wanted = _wanted(src)
    if not wanted:
        return []
    found = []
    for scope, (path, secret, what) in wanted.items():
        try:
            pems = PEM.findall(_read(path, secret, what))
        except (OSError, FileCheckError) as exc:
            found.append(unknown("tls.certificates", f"cannot read {what}: {exc}", scope=scope))
            continue
        if not pems:
            found.append(
                fail(
                    "tls.certificates",
                    f"{what} {path} holds no certificate",
                    f"install the PEM certificate at {path}",
                    scope=scope,
                )
            )
        elif scope == "central-ca" and len(pems) > BUNDLE:
            found.append(
                ok(
                    "tls.certificates",
                    f"{what}: a bundle of {len(pems)} CA certificates",
                    evidence={"path": str(path)},
                    scope=scope,
                )
            )
        else:
            found.append(_expiry(src, scope, what, path, pems))
    return found


def _wanted(src: Sources) -> dict[str, tuple[Path, bool, str]]:
    """scope → (file, is it a secret, what it is in words)."""
    out: dict[str, tuple[Path, bool, str]] = {}
    central = src.cfg.central
    if central is not None and central.enabled:
        out["central-site"] = (
            central.cert_path(),
            False,
            "the site certificate (central.cert_file)",
        )
        out["central-ca"] = (central.ca_path(), False, "the central CA (central.ca_file)")
    web = src.cfg.web
    if web.enabled and web.https and src.cfg.video.cameras:
        if web.tls_cert:
            out["web"] = (Path(web.tls_cert), False, "the web server's certificate (web.tls_cert)")
        else:
            own = Path(web.credentials_file).parent / WEB_CERT
            if own.exists():  # made by edge-video at its first start
                out["web"] = (own, True, "the box's own web certificate")
    return out


def _read(path: Path, secret: bool, what: str) -> bytes:
    if secret:
        return read_secret(path, what)
    return read_small_file(path, what)


def _expiry(src: Sources, scope: str, what: str, path: Path, pems: list[bytes]) -> Finding:
    from cryptography import x509  # here: edge-alarm runs without OpenSSL

    now = dt.datetime.fromtimestamp(src.now, dt.timezone.utc)
    try:
        certs = [x509.load_pem_x509_certificate(p) for p in pems]
    except ValueError as exc:
        return fail(
            "tls.certificates",
            f"{what} {path} is not a valid certificate ({exc})",
            f"install the PEM certificate at {path}",
            scope=scope,
        )
    cert = min(certs, key=lambda c: c.not_valid_after_utc)  # the first to expire decides
    end, start = cert.not_valid_after_utc, cert.not_valid_before_utc
    days = (end - now).total_seconds() / 86_400
    ev: dict[str, Any] = {
        "path": str(path),
        "not_after": end.isoformat(),
        "days_left": round(days, 1),
        "subject": cert.subject.rfc4514_string(),
    }
    renew = _renewal(scope, path)
    if start > now:
        return fail(
            "tls.certificates",
            f"{what} is valid only from {start:%Y-%m-%d %H:%M} UTC: the box clock is wrong, "
            "or the certificate is too new",
            "check the box clock (`timedatectl`, system.clock)",
            evidence=ev,
            scope=scope,
        )
    if days < 0:
        return fail(
            "tls.certificates", f"{what} expired on {end:%Y-%m-%d}", renew, evidence=ev, scope=scope
        )
    if days < WARN_DAYS:
        return warn(
            "tls.certificates",
            f"{what} expires on {end:%Y-%m-%d} ({days:.0f} days left)",
            renew,
            evidence=ev,
            scope=scope,
        )
    return ok(
        "tls.certificates", f"{what} valid until {day(end.timestamp())}", evidence=ev, scope=scope
    )


def _renewal(scope: str, path: Path) -> str:
    if scope == "central-site":
        return (
            "call a technician: the site certificate must be renewed by the monitoring "
            f"station's PKI (same CN, the site id) and installed at {path}; the bridge "
            "reloads it within seconds"
        )
    if scope == "central-ca":
        return f"get the central station's current CA certificate and install it at {path}"
    return (
        f"install a renewed certificate at {path} and restart edge-video (or delete the "
        "box's own web-tls.pem: a new one is made; its fingerprint changes, `edge web cert`)"
    )


# -- why the bridge is down -----------------------------------------------------------------------
@check("central.bridge", holdoff_s=60, about="why the bridge is down: unreachable or refused")
def bridge(src: Sources) -> list[Finding]:
    central = src.cfg.central
    if central is None or not central.enabled:
        return []
    if src.bus_error is not None:
        return [unknown("central.bridge", "cannot tell: the box broker does not answer")]
    if src.link == "1":
        return [ok("central.bridge", "the bridge is connected")]
    if src.link is None:
        return [unknown("central.bridge", "the bridge has not reported its state yet")]
    where = f"{central.host}:{central.port}"
    kind, origin, line = _from_log(src)
    if kind is None:
        kind, origin, line = _probe(central.host, central.port), "a TCP connection", ""
    ev = {"central": where, "from": origin, **({"log": line[-200:]} if line else {})}
    if kind == "refused":
        return [
            fail(
                "central.bridge",
                f"the central broker {where} is reached but refuses the TLS connection",
                "the site certificate is expired, not yet valid or issued by another CA "
                "(see tls.certificates; check the box clock); call a technician: the monitoring "
                "station must issue a certificate for this site id",
                evidence=ev,
            )
        ]
    if kind == "files":
        return [
            fail(
                "central.bridge",
                "the bridge cannot load its TLS files",
                f"install central.ca_file, cert_file and key_file (docs/bridge.md) in "
                f"{central.secrets_dir}, readable by the broker",
                evidence=ev,
            )
        ]
    if kind == "unreachable":
        return [
            fail(
                "central.bridge",
                f"the central broker {where} cannot be reached",
                "check the box's network (cable, router, 4G), DNS and firewall (TCP "
                f"{central.port} outbound); if they are fine, the central broker is down: call "
                "the monitoring station. The link comes back by itself",
                evidence=ev,
            )
        ]
    return [
        unknown(
            "central.bridge", f"the bridge is down and nothing says why ({origin})", evidence=ev
        )
    ]


def _from_log(src: Sources) -> tuple[str | None, str, str]:
    """(kind, where the log came from, the line that decided) from the box broker's log."""
    site = src.cfg.site.id
    for origin, lines in _logs(src):
        starts = [i for i, text in enumerate(lines) if "Connecting bridge" in text]
        if not starts:
            continue
        window = lines[starts[-ATTEMPTS] if len(starts) >= ATTEMPTS else starts[0] :]
        for text in window:
            if "Unable to load" in text or "will not work:" in text:
                return "files", origin, text
        refusals = (
            "OpenSSL Error",
            "Bad socket read/write on client local.",
            f"Client local.{site} disconnected",
            f"Client local.{site} closed its connection",
        )
        for text in window:
            if any(marker in text for marker in refusals):
                return "refused", origin, text
        for text in reversed(window):
            if "Error creating bridge" in text:
                return "unreachable", origin, text
        return None, origin, ""
    return None, "no readable box broker log", ""


def _logs(src: Sources) -> list[tuple[str, list[str]]]:
    out = []
    exe = shutil.which("journalctl")
    if exe is not None:
        try:
            done = subprocess.run(
                [
                    exe,
                    "-q",
                    "-u",
                    "edge-broker",
                    "--since",
                    "-15min",
                    "-n",
                    "400",
                    "-o",
                    "cat",
                    "--no-pager",
                ],
                capture_output=True,
                text=True,
                timeout=TOOL_S,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                out.append(("journalctl -u edge-broker", done.stdout.splitlines()))
        except (OSError, subprocess.TimeoutExpired):
            pass
    path = Path(src.cfg.paths.run_dir) / "mosquitto.log"
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - LOG_TAIL_BYTES))
            text = f.read(LOG_TAIL_BYTES).decode("utf-8", "replace")
        out.append((str(path), text.splitlines()))
    except OSError:
        pass
    return out


def _probe(host: str, port: int) -> str | None:
    """ "refused" when the central broker takes a TCP connection (then the TLS handshake is what
    fails), "unreachable" when it does not, None when no answer came within PROBE_S (a name
    that takes long to resolve, a black hole)."""
    result: list[str] = []

    def attempt() -> None:
        try:
            with socket.create_connection((host, port), timeout=PROBE_S):
                result.append("refused")
        except OSError:
            result.append("unreachable")

    worker = threading.Thread(target=attempt, name="diag-probe", daemon=True)
    worker.start()
    worker.join(PROBE_S + 0.05)
    return result[0] if result else None
