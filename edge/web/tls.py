"""HTTPS for the local web server: the box's own certificate, made once, and its fingerprint.

Basic auth sends the password with every request, so the LAN page is HTTPS unless the site
file says ``web.https = false``. A box has no name a public authority would certify, so at
first start it makes its own: a self-signed ECDSA P-256 certificate (fast to sign on a Pi,
accepted by every browser) valid ten years, kept with its private key in one secret file
beside the web users file (``web-tls.pem``, mode 0600, through :mod:`edge.secret_files`).
The browser warns about it once; the installer checks the SHA-256 fingerprint it shows
against `edge web cert` on the box before accepting. An installer may give the site's own
certificate instead (``web.tls_cert`` and ``web.tls_key``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path

from edge.config.live import WebConfig
from edge.errors import ConfigError
from edge.secret_files import SecretFileError, secret_problem, write_secret
from edge.web.files import read_as_owner

CERT_NAME = "web-tls.pem"
VALID_DAYS = 3650
WHAT = "web server certificate and key"


def own_certificate_path(cfg: WebConfig) -> Path:
    """Where the box's own certificate is: beside the web users file."""
    return Path(cfg.credentials_file).parent / CERT_NAME


def make_certificate(site_id: str, hosts: list[str]) -> bytes:
    """A new private key and self-signed certificate for ``hosts``, as one PEM text."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"edge {site_id}"[:64])])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem + cert.public_bytes(serialization.Encoding.PEM)


def hosts_of(cfg: WebConfig) -> list[str]:
    """The names the certificate is for: the listening address and loopback."""
    hosts = ["127.0.0.1", "::1"]
    if cfg.listen not in ("", "0.0.0.0", "::") and cfg.listen not in hosts:
        hosts.insert(0, cfg.listen)
    return hosts


def ensure_certificate(
    cfg: WebConfig, site_id: str, *, owner: tuple[int, int] | None = None
) -> tuple[Path, bool]:
    """The box's own certificate file, made when missing; ``(path, made now)``.

    ConfigError when it cannot be made or read: the message says how to fix it.
    """
    path = own_certificate_path(cfg)
    if os.path.lexists(path):
        read_certificate(path, owner)
        return path, False
    try:
        write_secret(path, make_certificate(site_id, hosts_of(cfg)), owner=owner)
    except OSError as exc:
        raise ConfigError(
            "web",
            [
                f"web.https: cannot create the web server's certificate {path} "
                f"({exc.strerror or exc}): run `edge web cert` as root once, or set "
                "web.https = false for plain HTTP (loopback only)"
            ],
        ) from exc
    return path, True


def read_certificate(path: Path, owner: tuple[int, int] | None = None) -> bytes:
    """The PEM text of a certificate file checked as a secret (it holds the key)."""
    try:
        return read_as_owner(path, WHAT, owner)
    except SecretFileError as exc:
        raise ConfigError("web", [f"web.https: {exc}"]) from exc


def fingerprint(pem: bytes) -> str:
    """SHA-256 of the (first) certificate in ``pem``, as browsers show it (AB:CD:…)."""
    der = ssl.PEM_cert_to_DER_cert(_first_certificate(pem))
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def certificate_in_use(cfg: WebConfig) -> Path:
    """The certificate the server presents: the site's own, or the box's own."""
    return Path(cfg.tls_cert) if cfg.tls_cert else own_certificate_path(cfg)


def server_context(cfg: WebConfig, site_id: str) -> ssl.SSLContext | None:
    """The TLS context of the server (None for plain HTTP); ConfigError says what to fix."""
    if not cfg.https:
        return None
    if cfg.tls_cert and cfg.tls_key:
        cert, key = cfg.tls_cert, cfg.tls_key
        problem = secret_problem(Path(key))
        if problem:
            raise ConfigError("web", [f"web.tls_key: {problem}"])
        where = "web.tls_cert / web.tls_key"
    else:
        path, _ = ensure_certificate(cfg, site_id)
        cert = key = str(path)
        where = f"web.https: {path}"
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "web",
            [
                f"{where}: cannot load {cert} with {key}: {exc}: give a PEM certificate "
                "and its private key (or delete the box's own file: a new one is made)"
            ],
        ) from exc
    return ctx


def _first_certificate(pem: bytes) -> str:
    text = pem.decode("ascii", errors="replace")
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("no PEM certificate in the file")
    return text[start : stop + len(end)] + "\n"
