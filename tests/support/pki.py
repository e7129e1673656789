"""A throw-away PKI for TLS tests: a CA, a server certificate for 127.0.0.1, site certificates.

Everything is generated with `cryptography` (no openssl binary), written as PEM with private
keys in mode 0600, as the box's installer writes them into /etc/edge/secrets. Besides the good
certificates the PKI has the bad ones tests need: an expired site certificate and a site
certificate signed by another CA. Keys are EC P-256: fast to generate, accepted by mosquitto.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = ec.EllipticCurvePrivateKey
ONE_DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class CertFiles:
    """PEM files of one certificate: its key (0600) and the certificate itself."""

    cert: Path
    key: Path


@dataclass
class Authority:
    """A CA that can issue certificates into ``directory``."""

    name: str
    directory: Path
    key: Key
    cert: x509.Certificate
    ca_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ca_file = self.directory / f"{self.name}.crt"
        _write_cert(self.ca_file, self.cert)

    def issue(
        self,
        stem: str,
        common_name: str,
        *,
        server: bool = False,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> CertFiles:
        """A leaf certificate ``<stem>.crt`` + ``<stem>.key``; a server one gets SANs for
        127.0.0.1 and localhost (the name and address the tests connect to)."""
        now = _now()
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - ONE_DAY)
            .not_valid_after(not_after or now + 30 * ONE_DAY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names: list[x509.GeneralName] = [
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost"),
            ]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        files = CertFiles(self.directory / f"{stem}.crt", self.directory / f"{stem}.key")
        _write_cert(files.cert, cert)
        write_key(files.key, key)
        return files


@dataclass(frozen=True)
class Pki:
    """What the bridge tests need, all under ``directory``."""

    directory: Path
    ca: Authority
    server: CertFiles
    console: CertFiles
    sites: dict[str, CertFiles]
    expired: CertFiles  # a certificate for the first site that expired yesterday
    foreign: CertFiles  # a certificate for the first site, signed by another CA
    other_ca: Authority

    def site(self, site_id: str) -> CertFiles:
        return self.sites[site_id]


def new_authority(directory: Path, name: str = "test-ca") -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ONE_DAY)
        .not_valid_after(now + 365 * ONE_DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    authority = Authority(name, directory, key, cert)
    write_key(directory / f"{name}.key", key)
    return authority


def make_pki(
    directory: Path,
    site_ids: tuple[str, ...] = ("site-a", "site-b"),
    console: str = "central-console",
) -> Pki:
    """A CA, the central server certificate, one client certificate per site and for the
    console, plus an expired and a foreign certificate for ``site_ids[0]``."""
    ca = new_authority(directory, "test-ca")
    other = new_authority(directory, "other-ca")
    now = _now()
    first = site_ids[0]
    return Pki(
        directory=directory,
        ca=ca,
        server=ca.issue("server", "localhost", server=True),
        console=ca.issue(console, console),
        sites={s: ca.issue(s, s) for s in site_ids},
        expired=ca.issue(
            f"{first}-expired", first, not_before=now - 10 * ONE_DAY, not_after=now - ONE_DAY
        ),
        foreign=other.issue(f"{first}-foreign", first),
        other_ca=other,
    )


def write_key(path: Path, key: Key) -> None:
    """Write a private key that only its owner can read, created with that mode (no window)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)
