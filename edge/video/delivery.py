"""Clip transfer to the central station: chunked, windowed, acknowledged, resumable.

Why chunks over MQTT rather than an upload elsewhere: the box has exactly one authenticated
path out (the box broker's bridge, mutual TLS, ACL per site), which already survives outages.
A clip is cut into ``chunk_bytes`` pieces published on ``edge/up/clips/<event>/<clip>/<n>``;
the central station acknowledges cumulatively on ``clips/<event>/ack`` with ``have`` = K
(chunks 0..K-1 stored) and finally ``done`` with the sha256 it verified. Only then is the clip
marked delivered in the :class:`ClipIndex` (which makes it the first to go under the quota).

Bounded everywhere: one clip at a time (oldest undelivered first), at most ``window`` chunks
unacknowledged, resend from K after a timeout that doubles up to ACK_TIMEOUT_MAX_S. Nothing is
handed to the bridge while its link is down (as in :mod:`edge.uplink.central`), so no resent
copies pile up in the bridge queue. Progress K is kept in a table of its own in the index's
SQLite file, so a restart of edge-video resumes where the central station said it was.
See docs/protocol.md, "Clip transfer".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

from edge.bus import Bus, Message
from edge.bus.topics import topic_id
from edge.errors import BusError, CommandError
from edge.tasks import within
from edge.uplink.topics import DOWN_CLIP_ACK_ALL, link, up, up_clip
from edge.video.clip_index import ClipIndex, ClipRecord

log = logging.getLogger(__name__)

CHUNK_BYTES = 32 * 1024
WINDOW = 8  # chunks in flight without an ack (≤ the bus queue and the bridge's inflight)
ACK_TIMEOUT_S = 5.0  # no progress for this long: resend from the last acknowledged chunk
ACK_TIMEOUT_MAX_S = 60.0
FAILED_MAX = 64  # clips whose file cannot be read, skipped until edge-video restarts
PROGRESS_DDL = (
    "CREATE TABLE IF NOT EXISTS clip_transfer ("
    "clip_id TEXT PRIMARY KEY, have INTEGER NOT NULL, updated REAL NOT NULL)"
)


def chunk_count(size: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    """At least one chunk: an empty file is still announced and acknowledged."""
    return max(1, -(-size // chunk_bytes))


def transfer_event(record: ClipRecord) -> str:
    """The event whose topic carries the chunks and acks: the clip's first event."""
    return record.event_ids[0] if record.event_ids else record.id


def chunk_topic(event_id: str, clip_id: str, n: int) -> str:
    """``edge/up/clips/<event>/<clip>/<n>``; the bridge carries it under ``clips/#``."""
    eid, cid = topic_id(event_id, "event id"), topic_id(clip_id, "clip id")
    return up(f"clips/{eid}/{cid}/{n}")


def read_chunks(path: Path, first: int, count: int, chunk_bytes: int) -> list[bytes]:
    with path.open("rb") as f:
        f.seek(first * chunk_bytes)
        return [f.read(chunk_bytes) for _ in range(count)]


class Progress:
    """Acknowledged chunk counts, in the clip index's SQLite file (an additive table)."""

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(path), timeout=5.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute(PROGRESS_DDL)
        # clips deleted by retention before delivery leave a row: drop it once per start
        self._db.execute("DELETE FROM clip_transfer WHERE clip_id NOT IN (SELECT id FROM clips)")

    def get(self, clip_id: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT have FROM clip_transfer WHERE clip_id = ?", (clip_id,)
            ).fetchone()
        return int(row[0]) if row else 0

    def set(self, clip_id: str, have: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO clip_transfer VALUES (?, ?, ?)",
                (clip_id, have, time.time()),
            )

    def forget(self, clip_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM clip_transfer WHERE clip_id = ?", (clip_id,))

    def oldest_undelivered(self, skip: Collection[str]) -> str | None:
        """Read-only look at the index's table: the clip to send next."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM clips WHERE delivered = 0 ORDER BY start_ts, id LIMIT ?",
                (len(skip) + 1,),
            ).fetchall()
        return next((r[0] for r in rows if r[0] not in skip), None)

    def close(self) -> None:
        with self._lock:
            self._db.close()


class ClipSender:
    """Sends undelivered clips one at a time; :meth:`run_sender`, :meth:`run_acks` and
    :meth:`run_link` are the loops to supervise, :meth:`wake` is called after a saved clip."""

    def __init__(
        self,
        *,
        site_id: str,
        bus: Bus,
        index: ClipIndex,
        beat: Callable[[str], None] = lambda _name: None,
        chunk_bytes: int = CHUNK_BYTES,
        window: int = WINDOW,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        metadata: Callable[[ClipRecord, str], dict[str, Any]] | None = None,
    ) -> None:
        self.site_id = site_id
        self.bus = bus
        self.index = index
        self.beat = beat
        self.chunk_bytes = chunk_bytes
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.metadata = metadata
        self.progress = Progress(index.path)
        self.link_up = False
        self.woken = asyncio.Event()
        self.acked = asyncio.Event()
        self.current: str | None = None
        self.have = 0
        self.done_sha: str | None = None
        self.failed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.sent_chunks = 0  # counters, for status and tests
        self.resends = 0

    def wake(self) -> None:
        """A clip was saved: look for work now rather than at the next poll."""
        self.woken.set()

    def payload(self, record: ClipRecord, event_id: str) -> dict[str, Any]:
        """The metadata message plus what the central needs to reassemble the file."""
        base = self.metadata(record, event_id) if self.metadata else {"v": 1, "clip_id": record.id}
        return {
            **base,
            "chunks": chunk_count(record.bytes, self.chunk_bytes),
            "chunk_bytes": self.chunk_bytes,
            "transfer_event": transfer_event(record),
        }

    # -- sender -------------------------------------------------------------------------------
    async def run_sender(self) -> None:
        while True:
            self.beat("delivery")
            record = None
            if self.link_up:
                clip_id = await asyncio.to_thread(self.progress.oldest_undelivered, self.failed)
                record = await asyncio.to_thread(self.index.get, clip_id) if clip_id else None
            if record is None:
                self.woken.clear()
                with contextlib.suppress(TimeoutError):
                    await within(self.woken.wait(), 1.0)
                continue
            try:
                await self._transfer(record)
            except BusError as exc:  # before OSError: a BusError is a ConnectionError
                log.warning("clip %s: box bus unavailable: %s", record.id, exc)
                await asyncio.sleep(1.0)
            except OSError as exc:
                log.error("clip %s: cannot read %s: %s; skipped", record.id, record.path, exc)
                self._skip(record.id)
            finally:
                self.current = None

    def _skip(self, clip_id: str) -> None:
        self.failed[clip_id] = None
        if len(self.failed) > FAILED_MAX:
            self.failed.popitem(last=False)

    async def _transfer(self, record: ClipRecord) -> None:
        """Until delivered or the link drops; the outer loop picks the clip up again."""
        chunks = chunk_count(record.bytes, self.chunk_bytes)
        self.current, self.done_sha = record.id, None
        self.have = min(await asyncio.to_thread(self.progress.get, record.id), chunks)
        event_id = transfer_event(record)
        log.info("clip %s: sending %d chunk(s) from %d", record.id, chunks, self.have)
        await self.bus.publish(up_clip(event_id), self.payload(record, event_id), timeout=5.0)
        sent_to, timeout, saved = self.have, self.ack_timeout_s, self.have
        while self.link_up:
            self.beat("delivery")
            if self.done_sha is not None:
                await self._finish(record)
                return
            if self.have != saved:
                rewound, saved = self.have < saved, self.have
                await asyncio.to_thread(self.progress.set, record.id, saved)
                sent_to = saved if rewound else max(sent_to, saved)
                timeout = self.ack_timeout_s
            end = min(self.have + self.window, chunks)
            if sent_to < end:
                sent_to += await self._send(record, event_id, sent_to, end)
                continue
            self.acked.clear()
            try:
                await within(self.acked.wait(), timeout)
            except TimeoutError:
                log.info("clip %s: no ack for %.0f s, resending from %d", record.id, timeout, saved)
                self.resends += 1
                sent_to, timeout = self.have, min(timeout * 2, ACK_TIMEOUT_MAX_S)
                if self.have >= chunks:  # all stored but no verdict: announce again
                    await self.bus.publish(up_clip(event_id), self.payload(record, event_id))

    async def _send(self, record: ClipRecord, event_id: str, first: int, end: int) -> int:
        data = await asyncio.to_thread(
            read_chunks, record.path, first, end - first, self.chunk_bytes
        )
        items = [(chunk_topic(event_id, record.id, first + i), blob) for i, blob in enumerate(data)]
        try:
            done = await self.bus.publish_many(items, timeout=5.0, window=self.window)
        except BusError as exc:
            log.warning("clip %s: box bus unavailable: %s", record.id, exc)
            done = 0
        self.sent_chunks += done
        if done < len(items):
            await asyncio.sleep(1.0)
        return done

    async def _finish(self, record: ClipRecord) -> None:
        if self.done_sha != record.sha256:
            log.error(
                "clip %s: the central station reports sha256 %s, ours is %s: sending again",
                record.id,
                self.done_sha,
                record.sha256,
            )
            self.done_sha, self.have = None, 0
            await asyncio.to_thread(self.progress.set, record.id, 0)
            return
        await asyncio.to_thread(self.index.mark_delivered, record.id)
        await asyncio.to_thread(self.progress.forget, record.id)
        log.info("clip %s delivered to the central station", record.id)

    # -- acks ---------------------------------------------------------------------------------
    async def run_acks(self) -> None:
        sub = self.bus.subscribe(DOWN_CLIP_ACK_ALL)
        with sub:
            while True:
                msg = await sub.get()
                self.on_ack(msg)

    def on_ack(self, msg: Message) -> None:
        try:
            body = msg.json()
        except CommandError as exc:
            log.warning("ignored a malformed clip ack: %s", exc)
            return
        if not isinstance(body, dict) or body.get("clip_id") != self.current:
            return  # late ack of a finished clip, or of another box's clip
        if body.get("done") is True and isinstance(body.get("sha256"), str):
            self.done_sha = body["sha256"]
        elif isinstance(body.get("have"), int) and body["have"] >= 0:
            self.have = body["have"]  # authoritative: lower means the central lost chunks
        else:
            log.warning("ignored a clip ack without have or done: %s", msg.payload[:200])
            return
        self.acked.set()

    # -- link ---------------------------------------------------------------------------------
    async def run_link(self) -> None:
        """Bridge notifications, as CentralLink reads them; down too when the bus is."""
        sub = self.bus.subscribe(link(self.site_id))
        with sub:
            while True:
                self.beat("delivery-link")
                try:
                    msg = await sub.get(timeout=1.0)
                except TimeoutError:
                    msg = None
                if msg is not None:
                    self._link(msg.payload.strip() == b"1")
                elif not self.bus.connected:
                    self._link(False)

    def _link(self, up_now: bool) -> None:
        if up_now != self.link_up:
            log.info("clip delivery: central link %s", "up" if up_now else "down")
            self.link_up = up_now
            self.woken.set()
            self.acked.set()  # a transfer waiting for an ack stops at once

    def loops(self) -> dict[str, Any]:
        return {
            "delivery": self.run_sender(),
            "delivery-acks": self.run_acks(),
            "delivery-link": self.run_link(),
        }

    def close(self) -> None:
        self.progress.close()
