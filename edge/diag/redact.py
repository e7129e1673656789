"""What must never leave the box in a support bundle, and taking it out.

Two layers, because one mistake must not leak a key:

1. The configuration is written as the effective settings with every secret-named value
   masked (``password``, ``secret``, ``token``, ``credential``, ``key`` — but not the *paths*
   ``*_file``/``*_dir``, which say where a secret lives and are what support needs) and the
   password of any URL (``rtsp://user:pass@camera``) masked.
2. Every text of the bundle is then searched for the secrets themselves — the contents of
   the secret files the site names (DC-09 key, TURN and ONVIF passwords, the central TLS key,
   the box-bus identities and the web users' hashes) and the URL passwords — and each match is
   replaced. Layer 2 catches a secret that reached a log line or a journal detail.

Secret files are read by the one rule of every secret (edge.secret_files). A file the rule
refuses (say the DC-09 key owned by the edge user, read by root) is still read for its kind
and size only (read_small_file: regular, capped), because here it is read to be *taken out*,
never used: skipping it would let it leak. The rule's complaint goes into the bundle's notes.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.secret_files import (
    MAX_SECRET_BYTES,
    FileCheckError,
    SecretFileError,
    read_secret,
    read_small_file,
)
from edge.system import MASK, SECRET_NAME

if TYPE_CHECKING:
    from edge.config import SiteConfig

PATH_SUFFIXES = ("_file", "_dir", "_path", "_format")
# Public, a list to walk, or the path of a secret file under another name.
NOT_SECRET = frozenset({"public_key", "keys", "profile_token", "tls_key"})
MIN_TOKEN = 12  # a structured file's fields this long are secret material (salts, hashes)
# A whole password file shorter than this is not searched for (noise). A short password
# makes the search eager (every "1234" in the bundle is redacted): better than a leak.
MIN_PASSWORD = 4
MAX_IDENTITY_FILES = 256
REDACTED = "[redacted]"


def mask_config(value: Any, key: str = "") -> Any:
    """``value`` (a model dump) with secret-named values and URL passwords masked."""
    if isinstance(value, dict):
        return {k: mask_config(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_config(v, key) for v in value]
    if value is None or isinstance(value, bool):
        return value
    if _secret_name(key):
        return MASK
    if isinstance(value, str):
        return mask_url(value)
    return value


def _secret_name(key: str) -> bool:
    low = key.lower()
    return (
        bool(SECRET_NAME.search(low)) and not low.endswith(PATH_SUFFIXES) and low not in NOT_SECRET
    )


def mask_url(text: str) -> str:
    """'rtsp://admin:***@cam/stream' for 'rtsp://admin:pw@cam/stream'; other text as it is."""
    password = url_password(text)
    if password is None:
        return text
    parts = urllib.parse.urlsplit(text)
    netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def url_password(text: str) -> str | None:
    if "://" not in text or "@" not in text:
        return None
    try:
        return urllib.parse.urlsplit(text).password
    except ValueError:
        return None


class Redactor:
    """The secrets of one site, found once, then taken out of every text of the bundle."""

    def __init__(self, needles: Iterable[str], notes: list[str]) -> None:
        unique = {n for n in needles if n}
        self.needles = sorted(unique, key=len, reverse=True)  # the longest first
        self.notes = notes  # secret files outside the rule, or unreadable: for the notes
        self.hits = 0

    @classmethod
    def for_site(cls, cfg: SiteConfig) -> Redactor:
        needles: set[str] = set()
        notes: list[str] = []
        for path, group_read, whole in secret_files(cfg):
            if not os.path.lexists(path):
                continue
            try:
                data = read_secret(path, "secret file", group_read=group_read)
            except SecretFileError as exc:
                notes.append(f"secret file outside the rule: {exc}")
                try:
                    data = read_small_file(path, "secret file", max_bytes=MAX_SECRET_BYTES)
                except FileCheckError as again:
                    notes.append(f"not searched for (unreadable): {again}")
                    continue
            needles |= _needles(data.decode("utf-8", "replace"), whole)
        for text in _strings(cfg.model_dump(mode="json")):
            password = url_password(text)
            if password:
                needles |= {password, urllib.parse.unquote(password)}
        return cls(needles, notes)

    def __call__(self, text: str) -> str:
        for needle in self.needles:
            if needle in text:
                self.hits += text.count(needle)
                text = text.replace(needle, REDACTED)
        return text


def secret_files(cfg: SiteConfig) -> list[tuple[Path, bool, bool]]:
    """(path, shared with a group, is a whole password) of every secret file the site uses."""
    found: list[tuple[Path, bool, bool]] = []
    if cfg.dc09 is not None and cfg.dc09.key_path() is not None:
        found.append((Path(str(cfg.dc09.key_path())), False, True))
    for server in cfg.live.ice_servers:
        for name in (server.credential_file, server.rest_secret_file):
            if name:
                found.append((Path(name), False, True))
    for camera in cfg.video.cameras:
        if camera.onvif is not None and camera.onvif.password_file:
            found.append((Path(camera.onvif.password_file), False, True))
    if cfg.central is not None:
        found.append((cfg.central.key_path(), False, False))
    found.append((Path(cfg.web.credentials_file), False, False))
    if cfg.web.tls_key:
        found.append((Path(cfg.web.tls_key), False, False))
    found += _identities(Path(cfg.bus.identities_dir))
    return found


def _identities(directory: Path) -> list[tuple[Path, bool, bool]]:
    """The box-bus identity files (one password each) and the broker's hash file."""
    try:
        names = sorted(os.listdir(directory))[:MAX_IDENTITY_FILES]
    except OSError:
        return []
    return [(directory / n, True, n != "passwd") for n in names if not n.startswith(".")]


def _needles(text: str, whole: bool) -> set[str]:
    """What to search for: the whole password, and the long fields of structured files
    (PEM lines, salts and hashes) whose short parts (user names, 'scrypt') are not secret."""
    found: set[str] = set()
    stripped = text.strip()
    if whole and len(stripped) >= MIN_PASSWORD:
        found.add(stripped)
        if re.fullmatch(r"[0-9A-Fa-f]+", stripped):
            found |= {stripped.lower(), stripped.upper()}
    for line in stripped.splitlines():
        line = line.strip()
        if len(line) >= MIN_TOKEN and not line.startswith("-----"):
            found.add(line)
        found |= {t for t in re.split(r"[\s:$]+", line) if len(t) >= MIN_TOKEN}
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
