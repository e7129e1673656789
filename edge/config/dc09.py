"""The `[dc09]` section: how the box reaches professional alarm receivers over SIA DC-09.

Receivers identify a site by its account and read zones and areas as numbers, while our site
configuration names them (``"door"``, ``"main"``). The numbering lives here, next to the
account, because it is part of what the monitoring station has on file for the site: an
installer may pin a number so that renaming or reordering zones does not silently change
what the operator's screen shows. Unpinned zones and partitions take their position in the
site file plus one.

The AES key never enters the model (it would show in reprs and dumps): the model holds the
path of the key file, checks the key at load time in the process that may read it (edge-alarm,
or root running `edge config check`; edge-video and `edge panel` load the same file without
access to the key), and :func:`load_key` reads it again when the transmitter starts.
"""

from __future__ import annotations

import os
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edge.config.models import ID_PATTERN, Strict
from edge.secret_files import read_secret

if TYPE_CHECKING:
    from edge.config.site import SiteConfig

SECRETS_DIR = "/etc/edge/secrets"
ZONE_MAX = 999  # ADM-CID zone field: 3 digits
AREA_MAX = 99  # ADM-CID group field: 2 digits
HEX_KEY_LENGTHS = {32: 128, 48: 192, 64: 256}  # hex digits -> AES key bits
ASCII_KEY_LENGTHS = {16: 128, 24: 192, 32: 256}  # characters -> AES key bits
KEY_FILE_MAX_BYTES = 1024  # a key is at most 64 hex digits and a line break


class Receiver(Strict):
    host: str = Field(
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:_-]+$",
        description="Receiver host name or IP address.",
    )
    port: int = Field(ge=1, le=65535, description="Receiver TCP port.")

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class Dc09Config(Strict):
    enabled: bool = Field(True, description="Transmit events to the alarm receivers.")
    account: str = Field(
        pattern=r"^[0-9A-Fa-f]{3,16}$",
        description="Account number the monitoring station gave the site (3–16 hex digits).",
    )
    receiver: str = Field(
        "0",
        pattern=r"^[0-9A-Fa-f]{1,6}$",
        description="Receiver number (`R` field, 1–6 hex digits) the station assigned.",
    )
    line: str = Field(
        "0",
        pattern=r"^[0-9A-Fa-f]{1,6}$",
        description="Line prefix (`L` field, 1–6 hex digits) the station assigned.",
    )
    protocol: Literal["SIA-DCS", "ADM-CID"] = Field(
        "SIA-DCS", description="Payload: SIA DC-03 codes or Ademco Contact ID."
    )
    primary: Receiver = Field(description="First receiver tried.")
    secondary: Receiver | None = Field(None, description="Used when the primary fails.")
    backup: Receiver | None = Field(
        None, description="Backup path (e.g. over another network), tried last."
    )
    key_file: str | None = Field(
        None,
        max_length=4096,
        description="AES key file (absolute, or relative to /etc/edge/secrets, mode 0600); "
        "unset: messages are not encrypted.",
    )
    key_format: Literal["hex", "ascii"] = Field(
        "hex",
        description="hex: 32/48/64 hex digits (AES-128/192/256, as DC-09 specifies); ascii: "
        "16/24/32 characters used as the key bytes (pysiaalarm / Home Assistant receivers).",
    )
    poll_interval_s: int = Field(
        60, ge=10, le=86_400, description="NULL supervision poll period on the current path."
    )
    ack_timeout_s: float = Field(
        5.0, ge=0.5, le=60, description="Wait this long for ACK / NAK / DUH (and to connect)."
    )
    retries: int = Field(
        2, ge=0, le=5, description="Resends on one receiver before failing over to the next."
    )
    verification_links: bool = Field(
        True, description="Append a [V…] link when the event has a clip URL."
    )
    zones: dict[str, int] = Field(
        default_factory=dict,
        description="Zone id → zone number (1–999); unlisted zones: position in [[zones]] + 1.",
    )
    partitions: dict[str, int] = Field(
        default_factory=dict,
        description="Partition id → area / group number (1–99); unlisted: position + 1.",
    )

    @field_validator("account", "receiver", "line")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("zones", "partitions")
    @classmethod
    def _numbers(cls, v: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        top = ZONE_MAX if info.field_name == "zones" else AREA_MAX
        problems = _mapping_problems(v, top)
        if problems:
            raise ValueError("; ".join(problems))
        return v

    @model_validator(mode="after")
    def _checks(self) -> Dc09Config:
        paths = [("primary", self.primary), ("secondary", self.secondary), ("backup", self.backup)]
        seen: dict[str, str] = {}
        for name, rcv in paths:
            if rcv is None:
                continue
            if str(rcv) in seen:
                raise ValueError(f"{name} is the same receiver as {seen[str(rcv)]} ({rcv})")
            seen[str(rcv)] = name
        path = self.key_path()
        if path is not None and _ours(path):
            load_key(self)  # fails early, never shows the key
        return self

    @property
    def encrypted(self) -> bool:
        return self.key_file is not None

    def key_path(self) -> Path | None:
        if self.key_file is None:
            return None
        return Path(SECRETS_DIR, self.key_file)  # an absolute key_file replaces the dir


def _ours(path: Path) -> bool:
    """Whether this process is the key's reader (edge-alarm, or root running `edge config
    check`): other services load the same site file without access to the key, and must not
    fail on it; the reader checks it at its own start."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True  # load_key says it is missing
    except PermissionError:
        return False  # a directory on the way is closed to us: not ours to read
    except (OSError, ValueError):  # NUL in the path, a loop...: load_key reports it
        return True
    return os.access(path, os.R_OK)


def _mapping_problems(mapping: dict[str, int], top: int) -> list[str]:
    problems = [
        f"{key!r} is not an id (lowercase letters, digits, - and _)"
        for key in mapping
        if not re.match(ID_PATTERN, key)
    ]
    problems += [
        f"{key!r} = {n}: numbers go from 1 to {top}"
        for key, n in mapping.items()
        if not 1 <= n <= top
    ]
    return problems + _duplicate_numbers(mapping)


def _duplicate_numbers(mapping: dict[str, int]) -> list[str]:
    owners: dict[int, list[str]] = {}
    for key, number in mapping.items():
        owners.setdefault(number, []).append(key)
    return [
        f"number {n} is given to {' and '.join(repr(k) for k in keys)}: numbers must be unique"
        for n, keys in sorted(owners.items())
        if len(keys) > 1
    ]


def load_key(cfg: Dc09Config) -> bytes | None:
    """The AES key bytes, or None when encryption is off; errors never contain the key.

    The file follows the one rule of every secret (edge.secret_files): a regular file owned by
    the service's user or root, mode 0600, read with a cap, so a mistaken path such as
    ``/dev/zero`` is refused instead of read until memory runs out.
    """
    path = cfg.key_path()
    if path is None:
        return None
    data = read_secret(path, "key_file", max_bytes=KEY_FILE_MAX_BYTES)
    where = str(path)
    try:
        text = data.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"key_file {where!r} is not ASCII text: write the key as text") from None
    return _key_bytes(text, cfg.key_format, where)


def _key_bytes(text: str, fmt: str, where: str) -> bytes:
    if fmt == "hex":
        if len(text) not in HEX_KEY_LENGTHS or any(c not in string.hexdigits for c in text):
            raise ValueError(
                f"key_file {where!r}: expected 32, 48 or 64 hex digits (AES-128/192/256), "
                f'found {len(text)} characters; or set key_format = "ascii"'
            )
        return bytes.fromhex(text)
    printable = all(c in string.printable and c not in string.whitespace for c in text)
    if len(text) not in ASCII_KEY_LENGTHS or not printable:
        raise ValueError(
            f"key_file {where!r}: expected 16, 24 or 32 printable characters "
            f'(AES-128/192/256), found {len(text)}; or set key_format = "hex"'
        )
    return text.encode("ascii")


def site_problems(cfg: Dc09Config, site: SiteConfig) -> list[str]:
    """Numbering rules that need the site: ids that exist, numbers unique once defaults apply."""
    zone_ids = [z.id for z in site.zones]
    part_ids = [p.id for p in site.partitions]
    problems = [
        f"dc09.zones: {k!r} is not a zone of this site: fix the id or remove it"
        for k in cfg.zones
        if k not in zone_ids
    ]
    problems += [
        f"dc09.partitions: {k!r} is not a partition of this site: fix the id or remove it"
        for k in cfg.partitions
        if k not in part_ids
    ]
    zones = numbering(zone_ids, cfg.zones)
    parts = numbering(part_ids, cfg.partitions)
    problems += [f"dc09.zones: {p}" for p in _duplicate_numbers(zones)]
    problems += [f"dc09.partitions: {p}" for p in _duplicate_numbers(parts)]
    problems += [
        f"dc09.zones: zone {k!r} gets number {n}, above {ZONE_MAX}: give it a number"
        for k, n in zones.items()
        if n > ZONE_MAX
    ]
    return problems


def numbering(ids: list[str], pinned: dict[str, int]) -> dict[str, int]:
    """Every id's number: the pinned one, else its position + 1."""
    return {i: pinned.get(i, pos + 1) for pos, i in enumerate(ids)}


def _dc09_of(site: SiteConfig, cfg: Dc09Config | None) -> Dc09Config | None:
    return cfg if cfg is not None else getattr(site, "dc09", None)


def zone_number(site: SiteConfig, zone_id: str, cfg: Dc09Config | None = None) -> int:
    """DC-09 zone number of a zone id; LookupError if the site has no such zone.

    ``cfg`` defaults to ``site.dc09`` once the site configuration carries that section.
    """
    dc09 = _dc09_of(site, cfg)
    pinned = dc09.zones if dc09 else {}
    numbers = numbering([z.id for z in site.zones], pinned)
    if zone_id not in numbers:
        raise LookupError(f"zone {zone_id!r} is not in the site configuration")
    return numbers[zone_id]


def partition_number(site: SiteConfig, partition_id: str, cfg: Dc09Config | None = None) -> int:
    """DC-09 area (SIA ``ri``) / ADM-CID group number of a partition id."""
    dc09 = _dc09_of(site, cfg)
    pinned = dc09.partitions if dc09 else {}
    numbers = numbering([p.id for p in site.partitions], pinned)
    if partition_id not in numbers:
        raise LookupError(f"partition {partition_id!r} is not in the site configuration")
    return numbers[partition_id]


__all__ = [
    "SECRETS_DIR",
    "Dc09Config",
    "Receiver",
    "load_key",
    "numbering",
    "partition_number",
    "site_problems",
    "zone_number",
]
