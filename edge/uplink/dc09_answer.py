"""Whether a receiver's answer is really the answer to the message we sent. Pure: no I/O.

A receiver checks each message it gets (sequence, account, a timestamp within −40/+20 s of
its clock, encryption); we check its answer the same way before an alarm counts as
delivered. Without that, anyone on the path could take alarms off the box's hands: an
encrypted ACK recorded once and replayed with the current sequence number, an ACK for
another account, or a plain ``"ACK"`` in answer to an encrypted alarm would all look like
deliveries, and the operator would never see the alarm.

- ACK / RSP: must be framed, carry our sequence number and account (and our receiver and
  line numbers when it names them), be encrypted when our message was, and carry a
  timestamp within the window when it is encrypted (DC-09 makes the timestamp mandatory
  there; it is what makes a recorded answer worthless later). A plain ACK has no
  timestamp to check, as pysiaalarm's; if it has one, the window applies too.
- DUH: gives the event up, so it must name our sequence number and account too; DC-09
  lets a receiver send it in clear (it could not read our message).
- NAK: never a delivery, only the receiver's clock for resynchronisation; accepted bare or
  framed, in clear, as the standard allows.

Everything else raises :class:`~edge.uplink.dc09_frame.ReplyError` with the reason, which
the transmitter reports as a fault of that receiver path.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from edge.uplink.dc09_frame import Header, Reply, ReplyError, format_timestamp, parse_reply

if TYPE_CHECKING:
    from edge.uplink.dc09_crypto import Dc09Cipher

# How far an answer's timestamp may lie behind / ahead of the receiver's clock as we know it
# (our clock plus the offset learnt from its NAKs): the window DC-09 gives receivers.
WINDOW_PAST_S = 40
WINDOW_FUTURE_S = 20


@dataclasses.dataclass(frozen=True)
class Sent:
    """What we sent, as far as an answer must echo it."""

    seq: int
    header: Header
    encrypted: bool


def delivered(reply: Reply) -> bool:
    """True for an answer that takes the message (only meaningful after :func:`check`)."""
    return reply.kind in ("ACK", "RSP")


def check(reply: Reply, sent: Sent, receiver_now: float) -> None:
    """ReplyError unless ``reply`` can be trusted as the answer to ``sent``.

    ``receiver_now`` is our estimate of the receiver's clock, in epoch seconds.
    """
    if reply.kind == "NAK":
        return
    if reply.seq is None:
        raise ReplyError(f'bare "{reply.kind}" without sequence number or account: not an answer')
    if reply.seq != sent.seq:
        raise ReplyError(f"{reply.kind} for message {reply.seq:04d}, not ours ({sent.seq:04d})")
    _check_routing(reply, sent.header)
    if reply.kind == "DUH":
        return _check_time(reply, receiver_now) if reply.timestamp is not None else None
    if sent.encrypted and not reply.encrypted:
        raise ReplyError(f"unencrypted {reply.kind} to an encrypted message: not trusted")
    if reply.encrypted and reply.timestamp is None:
        raise ReplyError(f"encrypted {reply.kind} without a timestamp: not trusted")
    if reply.timestamp is not None:
        _check_time(reply, receiver_now)


def answer(line: str, sent: Sent, cipher: Dc09Cipher | None, receiver_now: float) -> Reply:
    """Parse and check one answer line: the whole judgement, as a fuzzer sees it."""
    reply = parse_reply(line, cipher)
    check(reply, sent, receiver_now)
    return reply


def _check_routing(reply: Reply, header: Header) -> None:
    if reply.account is None:
        raise ReplyError(f"{reply.kind} without an account: not an answer to our message")
    if reply.account != header.account.upper():
        raise ReplyError(f"{reply.kind} for account {reply.account}, not ours ({header.account})")
    for name, got, ours in (
        ("receiver", reply.receiver, header.receiver),
        ("line", reply.line, header.line),
    ):
        if got is not None and not _same_number(got, ours):
            raise ReplyError(f"{reply.kind} for {name} {got or '(empty)'}, not ours ({ours})")


def _same_number(got: str, ours: str) -> bool:
    """R and L are hex numbers: ``R00`` and ``R0`` name the same receiver."""
    try:
        return int(got, 16) == int(ours, 16)
    except ValueError:
        return False


def _check_time(reply: Reply, receiver_now: float) -> None:
    assert reply.timestamp is not None
    drift = reply.timestamp - receiver_now
    if -WINDOW_PAST_S <= drift <= WINDOW_FUTURE_S:
        return
    raise ReplyError(
        f"{reply.kind} timestamp {format_timestamp(reply.timestamp)[1:]} UTC is {drift:+.0f} s "
        f"from the receiver's clock, outside −{WINDOW_PAST_S}/+{WINDOW_FUTURE_S} s: a replayed "
        "or stale answer (if it recurs, check both clocks use NTP)"
    )
