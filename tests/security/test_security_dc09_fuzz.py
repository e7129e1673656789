"""Fuzz of the DC-09 answer judgement: whatever a receiver sends, the box either refuses it
with a ReplyError or takes it, and takes it as a delivery only if it is a valid ACK to the
message sent. Valid is decided here, independently of the code under test: the receiver
library's CRC, AES from `cryptography`, and the rules of DC-09 spelled out in `oracle`."""

from __future__ import annotations

import calendar
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pysiaalarm", reason="pip install pysiaalarm (dev extra)")
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pysiaalarm import SIAEvent

from edge.uplink.dc09_answer import Sent, answer, delivered
from edge.uplink.dc09_crypto import Dc09Cipher
from edge.uplink.dc09_frame import Header, ReplyError, split_replies

ACCOUNT, OTHER = "AAA1", "BBB2"
KEY = b"0123456789ABCDEF"
SEQ = 42
NOW = float(calendar.timegm((2025, 6, 1, 12, 0, 0, 0, 0, 0)))
HEADER = Header("0", "0", ACCOUNT)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def aes(data: bytes, encrypt: bool) -> bytes:
    cipher = Cipher(algorithms.AES(KEY), modes.CBC(bytes(16)))
    op = cipher.encryptor() if encrypt else cipher.decryptor()
    return op.update(data) + op.finalize()


def stamp(epoch: float) -> str:
    return time.strftime("_%H:%M:%S,%m-%d-%Y", time.gmtime(epoch))


def reply_body(kind: str, encrypted: bool, seq: int, account: str, drift: int) -> str:
    """A receiver's answer as DC-09 writes it (NAKs carry seq 0000 and ``A0``)."""
    when = stamp(NOW + drift)
    if kind == "NAK":
        return f'"NAK"0000R0L0A0[]{when}'
    head = f'"{"*" if encrypted else ""}{kind}"{seq:04d}R0L0#{account}['
    if not encrypted:
        return head + ("]" + when if drift % 2 else "]")  # a plain ACK may omit the time
    plain = ("]" + when).encode()
    plain = b"0" * (16 - len(plain) % 16) + plain  # pysiaalarm pads with zeros
    return head + aes(plain, True).hex().upper()


def crc_of(text: str) -> str:
    """The receiver library's CRC-16 of text whose non-ASCII characters read as '?'."""
    crc = SIAEvent._crc_calc(text.encode("ascii", "replace").decode("ascii"))
    assert crc is not None
    return crc


def framed(body: bytes, fix: bool, crc: str = "0000", length: str = "0000") -> bytes:
    """``<LF><crc><len><body><CR>``; with ``fix``, CRC and length match the body."""
    if fix:
        crc, length = crc_of(body.decode("ascii", "replace")), f"{len(body):04X}"
    return b"\n" + f"{crc}{length}".encode() + body + b"\r"


def oracle(line: str, encrypted: bool) -> bool:
    """Is ``line`` a valid ACK (or RSP) to message SEQ of ACCOUNT, as DC-09 defines it?"""
    head = re.fullmatch(r"([0-9A-Fa-f]{4})([0-9A-Fa-f]{4})(.*)", line, re.S)
    if not head:
        return False
    body = head.group(3)
    data = body.encode("ascii", "replace")
    if int(head.group(1), 16) != int(crc_of(body), 16):
        return False
    if int(head.group(2), 16) != len(data):
        return False
    msg = re.fullmatch(r'"(\*?)(ACK|RSP)"(\d{4})([RLA#0-9A-Fa-f]*)\[(.*)', body, re.S)
    if not msg or int(msg.group(3)) != SEQ or bool(msg.group(1)) != encrypted:
        return False
    fields = re.findall(r"([RLA#])([0-9A-Fa-f]*)", msg.group(4))
    if "".join(k + v for k, v in fields) != msg.group(4):
        return False
    names = [k for k, _ in fields]
    if len(names) != len(set(names)) or dict(fields).get("#", "").upper() != ACCOUNT:
        return False
    for name in ("R", "L"):
        value = dict(fields).get(name)
        if value is not None and (value == "" or int(value, 16) != 0):
            return False
    rest = msg.group(5)
    if encrypted:
        try:
            raw = bytes.fromhex(rest.strip())
        except ValueError:
            return False
        if not raw or len(raw) % 16:
            return False
        rest = aes(raw, False).decode("ascii", "replace")
    when = re.search(r"_(\d\d:\d\d:\d\d,\d\d-\d\d-\d{4})\s*$", rest)
    if when is None:
        return not encrypted
    try:
        epoch = calendar.timegm(time.strptime(when.group(1), "%H:%M:%S,%m-%d-%Y"))
    except ValueError:
        return not encrypted
    return -40 <= epoch - NOW <= 20


def judge(buffer: bytes, encrypted: bool) -> None:
    """Feed a receive buffer through the box's judgement; check the property on each line."""
    sent = Sent(SEQ, HEADER, encrypted)
    cipher = Dc09Cipher(KEY) if encrypted else None
    lines, _ = split_replies(buffer)
    for line in lines:
        try:
            reply = answer(line, sent, cipher, NOW)
        except ReplyError:
            continue
        if delivered(reply):
            assert oracle(line, encrypted), (line, reply)
        else:
            assert reply.kind in ("NAK", "DUH"), reply


@FUZZ
@given(buffer=st.binary(max_size=400), encrypted=st.booleans())
def test_arbitrary_bytes_never_raise_and_never_deliver(buffer: bytes, encrypted: bool) -> None:
    judge(buffer, encrypted)


EDIT = st.tuples(
    st.sampled_from(["flip", "delete", "insert"]),
    st.integers(0, 200),
    st.binary(min_size=1, max_size=3),
)


# Values repeated so that about half the frames start as a valid, matching answer.
MUTANT = {
    "kind": st.sampled_from(["ACK", "ACK", "ACK", "RSP", "NAK", "DUH"]),
    "encrypted": st.booleans(),
    "same_encryption": st.sampled_from([True, True, True, False]),
    "seq": st.sampled_from([SEQ, SEQ, SEQ, SEQ + 1, 0, 9999]),
    "account": st.sampled_from([ACCOUNT, ACCOUNT, ACCOUNT, OTHER, "aaa1", ""]),
    "drift": st.integers(-60, 40),
    "edits": st.lists(EDIT, max_size=3),
    "fix": st.sampled_from([True, True, True, False]),
}


@FUZZ
@given(**MUTANT)
def test_mutated_answers_are_delivered_only_when_valid(
    kind: str,
    encrypted: bool,
    same_encryption: bool,
    seq: int,
    account: str,
    drift: int,
    edits: list[tuple[str, int, bytes]],
    fix: bool,
) -> None:
    valid = reply_body(kind, encrypted if same_encryption else not encrypted, seq, account, drift)
    body = bytearray(valid.encode())
    for op, at, data in edits:
        at = min(at, len(body))
        if op == "flip" and at < len(body):
            body[at] ^= data[0] or 1
        elif op == "delete":
            del body[at : at + len(data)]
        else:
            body[at:at] = data
    judge(framed(bytes(body), fix, *_head(framed(valid.encode(), True))), encrypted)


def _head(frame: bytes) -> tuple[str, str]:
    """The CRC and length of the unmutated frame: kept when ``fix`` is off."""
    return frame[1:5].decode(), frame[5:9].decode()


@pytest.mark.parametrize("encrypted", [True, False])
@pytest.mark.parametrize("drift", [-40, -1, 0, 20])
def test_the_oracle_and_the_box_agree_on_a_valid_ack(encrypted: bool, drift: int) -> None:
    line = framed(reply_body("ACK", encrypted, SEQ, ACCOUNT, drift).encode(), True)
    text = line.strip(b"\n\r").decode()
    assert oracle(text, encrypted)
    cipher = Dc09Cipher(KEY) if encrypted else None
    assert delivered(answer(text, Sent(SEQ, HEADER, encrypted), cipher, NOW))


@pytest.mark.parametrize("drift", [-41, 21, -3600])
def test_an_encrypted_ack_outside_the_window_is_refused(drift: int) -> None:
    text = framed(reply_body("ACK", True, SEQ, ACCOUNT, drift).encode(), True).decode().strip()
    assert not oracle(text, True)
    with pytest.raises(ReplyError, match="outside"):
        answer(text, Sent(SEQ, HEADER, True), Dc09Cipher(KEY), NOW)
