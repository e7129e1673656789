"""One TCP path to one DC-09 receiver: a persistent connection, one frame in flight.

Receivers read a frame per segment and answer it before reading the next, so a second
frame written before the answer can be glued to the first and lost: the link writes one
frame and waits for the reply that carries its sequence number. A reply to an earlier,
timed-out frame that arrives late is skipped rather than taken as this frame's answer.
Any socket error or timeout closes the connection; the next exchange reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from edge.errors import EdgeError
from edge.tasks import within
from edge.uplink.dc09_frame import Reply, parse_reply, split_replies

if TYPE_CHECKING:
    from edge.config.dc09 import Receiver
    from edge.uplink.dc09_crypto import Dc09Cipher

log = logging.getLogger(__name__)

READ_SIZE = 1024
MAX_BUFFER = 8192  # a receiver that floods us is cut off, not buffered


class LinkError(EdgeError, ConnectionError):
    """The receiver could not be reached, closed the connection or did not answer in time."""


class ReceiverLink:
    """Connection state and clock offset of one receiver path."""

    def __init__(self, name: str, receiver: Receiver, timeout_s: float) -> None:
        self.name = name
        self.receiver = receiver
        self.timeout_s = timeout_s
        self.offset_s = 0.0  # receiver clock minus ours, learnt from its NAKs
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buffer = b""

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    async def exchange(self, frame: bytes, seq: int, cipher: Dc09Cipher | None) -> Reply:
        """Send one frame, return its reply; LinkError / ReplyError when there is none."""
        try:
            writer = await self._connect()
            self._buffer = b""
            writer.write(frame)
            return await within(self._sent_and_answered(writer, seq, cipher), self.timeout_s)
        except asyncio.CancelledError:
            self._abort()
            raise
        except TimeoutError:
            self._abort()
            raise LinkError(f"no answer from {self.receiver} within {self.timeout_s:g} s") from None
        except OSError as exc:
            self._abort()
            raise LinkError(f"{self.receiver}: {exc.strerror or exc}") from exc

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is None:
            return
        writer.close()
        # Closing a broken connection: nothing is left to save if it fails.
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await within(writer.wait_closed(), 1.0)

    def _abort(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()

    async def _connect(self) -> asyncio.StreamWriter:
        if self._writer is not None and self.connected:
            return self._writer
        self._abort()
        rcv = self.receiver
        reader, writer = await within(asyncio.open_connection(rcv.host, rcv.port), self.timeout_s)
        log.info("DC-09 %s receiver %s connected", self.name, rcv)
        self._reader, self._writer = reader, writer
        return writer

    async def _sent_and_answered(
        self, writer: asyncio.StreamWriter, seq: int, cipher: Dc09Cipher | None
    ) -> Reply:
        """Within one timeout: a receiver that accepts but never reads cannot hold us."""
        await writer.drain()
        return await self._reply(seq, cipher)

    async def _reply(self, seq: int, cipher: Dc09Cipher | None) -> Reply:
        assert self._reader is not None
        while True:
            lines, self._buffer = split_replies(self._buffer)
            for line in lines:
                reply = parse_reply(line, cipher)
                if reply.seq is None or reply.seq == seq or reply.kind == "NAK":
                    return reply
                log.debug("skipping a late %s to message %04d", reply.kind, reply.seq)
            chunk = await self._reader.read(READ_SIZE)
            if not chunk:
                raise ConnectionResetError(0, "the receiver closed the connection")
            self._buffer += chunk
            if len(self._buffer) > MAX_BUFFER:
                raise ConnectionAbortedError(0, "the receiver sent too much without a reply")
