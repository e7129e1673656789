"""SIA DC-09 frames on the wire: what we send and what receivers answer. Pure: no I/O.

A frame is ``<LF><crc><0LLL><body><CR>``; the body runs from the opening quote of the
message id through the timestamp, and both the CRC-16/ARC and the length (4 hex digits)
cover exactly the body. Sent bodies always carry the receiver (``R``), line (``L``) and
account (``#``) fields: receivers route on them, and pysiaalarm requires ``L``.

Replies are parsed leniently where receivers differ harmlessly (field order of a NAK,
a bare ``"NAK"`` without framing) and strictly where a mistake would lose an alarm (CRC,
length, sequence number, an encrypted ACK that does not decrypt).
"""

from __future__ import annotations

import calendar
import dataclasses
import re
import time
from typing import TYPE_CHECKING, Literal

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.uplink.dc09_crypto import Dc09Cipher

SEQ_MIN, SEQ_MAX = 1, 9999
MAX_BODY = 0xFFF  # the length field is "0LLL"
TIMESTAMP_FORMAT = "_%H:%M:%S,%m-%d-%Y"

MessageId = Literal["SIA-DCS", "ADM-CID", "NULL"]
ReplyKind = Literal["ACK", "NAK", "DUH", "RSP"]

_FRAMED = re.compile(r"([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})(\".*)", re.S)
_BODY = re.compile(r"\"(\*?)(ACK|NAK|DUH|RSP)\"(\d{4})((?:[RLA#][0-9A-Fa-f]*)*)\[(.*)", re.S)
_BARE = re.compile(rb"\s*\"(ACK|NAK|DUH|RSP)\"\s*")
_FIELD = re.compile(r"([RLA#])([0-9A-Fa-f]*)")
_STAMP = re.compile(r"_(\d{2}:\d{2}:\d{2},\d{2}-\d{2}-\d{4})\s*$")


class ReplyError(EdgeError, ValueError):
    """A receiver's reply cannot be trusted (bad CRC, length, format or encryption)."""


def crc16_arc(data: bytes) -> int:
    """CRC-16/ARC (poly 0x8005 reflected as 0xA001, init 0), the DC-09 frame check."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def format_timestamp(epoch: float) -> str:
    """DC-09 timestamp in UTC: ``_HH:MM:SS,MM-DD-YYYY``."""
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime(epoch))


def parse_timestamp(text: str) -> float | None:
    """Epoch seconds of a ``_HH:MM:SS,MM-DD-YYYY`` (UTC) at the end of text, if there is one."""
    match = _STAMP.search(text)
    if not match:
        return None
    try:
        parsed = time.strptime(match.group(1), TIMESTAMP_FORMAT[1:])
    except ValueError:
        return None
    return float(calendar.timegm(parsed))


@dataclasses.dataclass(frozen=True)
class Header:
    """What routes a message at the receiver; the same for every message of a site."""

    receiver: str
    line: str
    account: str


def body(
    message_id: MessageId,
    seq: int,
    header: Header,
    tail: str,
    cipher: Dc09Cipher | None = None,
) -> str:
    """Frame body; ``tail`` is everything after ``[`` through the timestamp, in clear."""
    if not SEQ_MIN <= seq <= SEQ_MAX:
        raise ValueError(f"sequence number {seq} is outside {SEQ_MIN}–{SEQ_MAX}")
    star = "*" if cipher else ""
    content = cipher.seal(tail) if cipher else tail
    return (
        f'"{star}{message_id}"{seq:04d}R{header.receiver}L{header.line}#{header.account}[{content}'
    )


def frame(text: str) -> bytes:
    """Wrap a body: ``<LF><crc><0LLL><body><CR>``."""
    data = text.encode("ascii")
    if len(data) > MAX_BODY:
        raise ValueError(f"DC-09 body is {len(data)} bytes; at most {MAX_BODY} fit the length")
    return b"\n%04X%04X%s\r" % (crc16_arc(data), len(data), data)


@dataclasses.dataclass(frozen=True)
class Reply:
    """An ACK / NAK / DUH / RSP; ``seq`` None for a bare reply, ``timestamp`` in epoch s.

    ``receiver``, ``line`` and ``account`` are the ``R``, ``L`` and ``#`` fields as the
    receiver wrote them (upper-case), None when absent: whether they match what we sent is
    :mod:`edge.uplink.dc09_answer`'s to judge.
    """

    kind: ReplyKind
    seq: int | None = None
    account: str | None = None
    encrypted: bool = False
    timestamp: float | None = None
    receiver: str | None = None
    line: str | None = None


def split_replies(buffer: bytes) -> tuple[list[str], bytes]:
    """Complete replies in a receive buffer, and what is left of it.

    A framed reply ends with CR; a bare ``"NAK"`` (pysiaalarm's answer to an unknown
    account) has no terminator and is taken when it is all the buffer holds.
    """
    lines: list[str] = []
    while b"\r" in buffer:
        line, _, buffer = buffer.partition(b"\r")
        lines.append(line.strip(b"\n\0 ").decode("ascii", "replace"))
    if _BARE.fullmatch(buffer):
        lines.append(buffer.strip().decode("ascii"))
        buffer = b""
    return lines, buffer


def parse_reply(line: str, cipher: Dc09Cipher | None = None) -> Reply:
    """One reply line (without LF/CR); ReplyError when it cannot be trusted."""
    if not line:
        raise ReplyError("empty reply: the receiver could not read our frame (CRC or format)")
    bare = _BARE.fullmatch(line.encode("ascii", "replace"))
    if bare:
        kind = bare.group(1).decode("ascii")
        return Reply(kind)  # type: ignore[arg-type]
    framed = _FRAMED.fullmatch(line)
    if not framed:
        raise ReplyError(f"not a DC-09 reply: {line[:60]!r}")
    crc, length, text = framed.groups()
    data = text.encode("ascii", "replace")
    if int(crc, 16) != crc16_arc(data):
        raise ReplyError(f"reply CRC {crc} does not match {crc16_arc(data):04X}")
    if int(length, 16) != len(data):
        raise ReplyError(f"reply length {length} does not match {len(data):04X}")
    return _parse_body(text, cipher)


def _parse_body(text: str, cipher: Dc09Cipher | None) -> Reply:
    match = _BODY.fullmatch(text)
    if not match:
        raise ReplyError(f"unknown reply: {text[:60]!r}")
    star, kind, seq, fields, rest = match.groups()
    routing = _routing(fields)
    encrypted = bool(star)
    if encrypted:
        rest = _decrypt(rest, cipher)
    return Reply(
        kind,  # type: ignore[arg-type]
        seq=int(seq),
        account=routing.get("#"),
        encrypted=encrypted,
        timestamp=parse_timestamp(rest),
        receiver=routing.get("R"),
        line=routing.get("L"),
    )


def _routing(fields: str) -> dict[str, str]:
    """The R, L, A and # fields; a field given twice makes the reply ambiguous."""
    found: dict[str, str] = {}
    for key, value in _FIELD.findall(fields):
        if key in found:
            raise ReplyError(f"reply gives the {key} field twice: {fields[:40]!r}")
        found[key] = value.upper()
    return found


def _decrypt(rest: str, cipher: Dc09Cipher | None) -> str:
    if cipher is None:
        raise ReplyError("encrypted reply, but no AES key is configured: set dc09.key_file")
    try:
        plain = cipher.open(rest.strip())
    except ValueError as exc:
        raise ReplyError(f"encrypted reply does not decrypt: {exc}") from None
    if parse_timestamp(plain) is None:
        raise ReplyError("encrypted reply decrypts to garbage: the receiver has another key")
    return plain
