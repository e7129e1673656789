"""Remote commands from the central station: verification, replay protection, arguments.

A command arrives on ``sites/<site>/cmd/<name>`` from anyone who can publish there, so every
check assumes a hostile sender. The order is fixed (docs/commands.md) so that the answer to an
unsigned message depends only on the bytes received, never on the box's clock, nonces or
configuration: size, UTF-8, nesting depth and JSON → envelope fields → key id → signature →
site and topic → time window → nonce → command name → arguments. The nonce is recorded only
after the signature and the time check passed, so only a key holder can fill the store.

:meth:`CommandVerifier.verify` never raises: every input ends as a :class:`Command` to execute
or a :class:`Refusal` whose reason is a sentence for the operator. Existence of the partition,
zone or output named in the arguments is left to the service that executes the command.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import re
import sqlite3
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edge.config.models import ID_PATTERN
from edge.config.remote import MAX_AGE_LIMIT_S
from edge.errors import EdgeError
from edge.sqlite_tx import immediate
from edge.uplink.signing import canonical_bytes, load_public_keys, utc_stamp

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from edge.config.remote import RemoteConfig

log = logging.getLogger(__name__)

VERSION = 1
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_DEPTH = 8
NONCE_FILE = "nonces.db"
ENVELOPE = ("v", "site", "name", "args", "nonce", "ts", "operator", "key", "sig")
NonceStatus = Literal["added", "seen", "full"]
INTERNAL = "the box could not check this command (internal error, logged); it was not executed"
_CLOCKS = "check the clocks of the central station and of the box (timedatectl)"
_STALE = "the command was signed {s:.0f} s before the box's time (accepted: {limit} s): " + _CLOCKS
_FUTURE = "the command is dated {s:.0f} s after the box's time (accepted: {limit} s): " + _CLOCKS
_REPLAYED = "nonce {nonce} was already used: sign a new command (fresh nonce) to repeat it"
_FULL = "more than {n} commands in the last {s} s: retry in a minute"
_STORE_FAILED = "the box cannot record the command's nonce (storage problem, logged): retry"
_UNKNOWN_KEY = (
    "key {key!r} is not provisioned on this box: sign with a provisioned key, or add its "
    "public key under [[remote.keys]] in the site configuration"
)
_BAD_SIGNATURE = (
    "the signature does not match the command for key {key!r}: it was altered, or signed "
    "with another key or another canonical form (docs/commands.md)"
)

_A = re.ASCII
_ID = re.compile(ID_PATTERN, _A)
_DATE = r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})"
_TS = re.compile(_DATE + r"(?:\.([0-9]{1,6}))?(?:Z|\+00:00)", _A)
_FIELDS: dict[str, tuple[re.Pattern[str], str]] = {
    "site": (re.compile(r"[a-z0-9][a-z0-9-]{1,62}", _A), "a site id"),
    "name": (re.compile(r"[a-z][a-z0-9_]{0,31}", _A), "a command name (lowercase, ≤ 32)"),
    "nonce": (re.compile(r"[A-Za-z0-9_-]{16,64}", _A), "16 to 64 url-safe characters"),
    "operator": (
        re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", _A),
        "an operator id (letters, digits, _ . @ -; ≤ 64)",
    ),
    "key": (_ID, "a key id (lowercase letters, digits, - _; ≤ 32)"),
    "ts": (_TS, "a UTC ISO 8601 time ending in Z, e.g. 2025-01-15T08:30:00.000Z"),
    "sig": (re.compile(r"[A-Za-z0-9+/]{86}==", _A), "a base64 Ed25519 signature (88 chars)"),
}


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass(frozen=True)
class Command:
    """A verified command: signed by a provisioned key, for this site, fresh, never seen."""

    name: str
    args: dict[str, Any]  # validated, with defaults filled in
    nonce: str
    ts: dt.datetime
    operator: str
    key_id: str


@dataclass(frozen=True)
class Refusal:
    """Why a command is not executed; nonce/name/operator are echoed once they are well-formed."""

    reason: str
    code: str
    nonce: str | None = None
    name: str | None = None
    operator: str | None = None


class NonceStoreError(EdgeError, OSError):
    """The nonce store cannot be opened or written; commands are refused meanwhile."""


# --- arguments ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One argument of a command: its kind, bounds and default (None: omitted when absent)."""

    kind: Literal["id", "choice", "int", "bool", "text"]
    required: bool = True
    default: Any = None
    choices: tuple[str, ...] = ()
    lo: int = 0
    hi: int = 0


_IDARG = Arg("id")
_REASON = Arg("text", required=False, default="", hi=200)
SCHEMAS: Mapping[str, Mapping[str, Arg]] = {
    "arm": {
        "partition": _IDARG,
        "mode": Arg("choice", required=False, default="full", choices=("full", "part")),
        "force": Arg("bool", required=False, default=False),
    },
    "disarm": {"partition": _IDARG},
    "bypass": {"zone": _IDARG},
    "unbypass": {"zone": _IDARG},
    "output": {
        "output": _IDARG,
        "op": Arg("choice", choices=("on", "off", "pulse")),
        "seconds": Arg("int", required=False, lo=1, hi=3600),
    },
    "diag": {},
    "restart": {"service": Arg("choice", choices=("alarm", "video", "broker"))},
    # Safe remediation (edge.alarm.remedies): a level-1 maintainer's actions.
    "camera_reconnect": {"camera": _IDARG},
    "dc09_test": {},
    "outbox_flush": {},
    "live": {"camera": _IDARG, "reason": _REASON},  # WebRTC live view (edge-video)
    "patrol": {"camera": Arg("id", required=False), "reason": _REASON},  # none: every camera
}


def _value_problem(spec: Arg, value: Any) -> str | None:
    if spec.kind == "id":
        ok = isinstance(value, str) and _ID.fullmatch(value) is not None
        return None if ok else "must be an id: lowercase letters, digits, - or _, 1 to 32 long"
    if spec.kind == "choice":
        ok = isinstance(value, str) and value in spec.choices
        return None if ok else f"must be one of {', '.join(spec.choices)}"
    if spec.kind == "int":
        ok = type(value) is int and spec.lo <= value <= spec.hi
        return None if ok else f"must be a whole number from {spec.lo} to {spec.hi}"
    if spec.kind == "bool":
        return None if type(value) is bool else "must be true or false"
    bad = ("Cc", "Cf", "Zl", "Zp")
    ok = isinstance(value, str) and len(value) <= spec.hi
    ok = ok and not any(unicodedata.category(c) in bad for c in value)
    return None if ok else f"must be text of at most {spec.hi} characters, no control characters"


def check_arguments(name: str, args: Mapping[str, Any]) -> dict[str, Any] | str:
    """Validated arguments with defaults filled in, or the sentence saying what is wrong."""
    schema = SCHEMAS[name]
    extra = sorted(set(args) - set(schema))
    if extra:
        allowed = ", ".join(schema) or "none"
        return f"{name}: unknown argument {_short(extra[0])} (allowed: {allowed})"
    out: dict[str, Any] = {}
    for field, spec in schema.items():
        if field not in args:
            if spec.required:
                return f"{name}: argument {field!r} is required"
            if spec.default is not None:
                out[field] = spec.default
            continue
        problem = _value_problem(spec, args[field])
        if problem:
            return f"{name}: {field!r} {problem} (got {_short(args[field])})"
        out[field] = args[field]
    if name == "output" and out["op"] == "off" and "seconds" in out:
        return "output: 'seconds' does not apply to op 'off'; remove it"
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --- payload and envelope ------------------------------------------------------------------


@dataclass(frozen=True)
class _Envelope:
    site: str
    name: str
    args: dict[str, Any]
    nonce: str
    ts: dt.datetime
    operator: str
    key_id: str
    sig: bytes
    signed: bytes  # canonical bytes the signature must cover


def _too_deep(text: str, limit: int) -> bool:
    """Nesting depth, scanned before parsing so the parser never recurses deeply."""
    depth, in_str, escaped = 0, False, False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("an object has the same key twice")
    return out


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_payload(payload: bytes) -> Any:
    """The JSON value of a payload, or a Refusal (size is checked before anything else)."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Refusal(
            f"the command is {len(payload)} bytes; the box accepts at most {MAX_PAYLOAD_BYTES}",
            "too_large",
        )
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        return Refusal(f"the command is not UTF-8 text (bad byte at {exc.start})", "bad_json")
    if _too_deep(text, MAX_DEPTH):
        return Refusal(f"the command JSON is nested deeper than {MAX_DEPTH} levels", "bad_json")
    try:
        return json.loads(text, object_pairs_hook=_object, parse_constant=_constant)
    except (ValueError, RecursionError) as exc:
        return Refusal(f"the command is not valid JSON ({exc})", "bad_json")


def _ts(text: str) -> dt.datetime | None:
    m = _TS.fullmatch(text)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    micro = int((m.group(7) or "0").ljust(6, "0"))
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def parse_envelope(data: Any) -> _Envelope | Refusal:
    """Shape of the envelope only: nothing here depends on the box's keys, clock or state."""
    if not isinstance(data, dict):
        return Refusal(
            f"a command is a JSON object with the fields {', '.join(ENVELOPE)}", "bad_json"
        )
    missing = [f for f in ENVELOPE if f not in data]
    extra = sorted(set(data) - set(ENVELOPE))
    if missing or extra:
        what = (
            f"field {missing[0]!r} is missing" if missing else f"unknown field {_short(extra[0])}"
        )
        return Refusal(f"not a command envelope: {what} (see docs/commands.md)", "bad_json")
    if type(data["v"]) is not int or data["v"] != VERSION:
        return Refusal(f"protocol version v={_short(data['v'])}; this box speaks v=1", "bad_json")
    for field, (pattern, words) in _FIELDS.items():
        value = data[field]
        if not isinstance(value, str) or pattern.fullmatch(value) is None:
            return Refusal(f"field {field!r} must be {words} (got {_short(value)})", "bad_json")
    ts = _ts(data["ts"])
    if ts is None or not isinstance(data["args"], dict):
        problem = "'args' must be a JSON object" if ts else "'ts' is not a real date and time"
        return Refusal(f"not a command envelope: {problem}", "bad_json")
    return _signed_envelope(data, ts)


def _signed_envelope(data: dict[str, Any], ts: dt.datetime) -> _Envelope | Refusal:
    fields = {f: data[f] for f in ("site", "name", "args", "nonce", "operator")}
    try:
        signed = canonical_bytes(**fields, ts=data["ts"], key_id=data["key"])
    except ValueError as exc:
        ids = (data["nonce"], data["name"], data["operator"])
        return Refusal(f"'args' cannot be signed: {exc}", "bad_json", *ids)
    sig = base64.b64decode(data["sig"])
    return _Envelope(**fields, ts=ts, key_id=data["key"], sig=sig, signed=signed)


# --- replay protection ---------------------------------------------------------------------


class NonceStore:
    """Nonces of accepted commands, kept on disk for MAX_AGE_LIMIT_S after their signed time.

    Why on disk (SQLite, WAL, synchronous=FULL, so each commit is fsync'ed): a restart must not
    re-open the replay window. Why keyed by the command's own time rather than arrival: a box
    clock stepping back cannot expire an entry early. Bounded: expired entries are deleted on
    every add, and when ``capacity`` live entries remain, new commands are refused, not older
    nonces forgotten (forgetting one would let its command be replayed).
    """

    def __init__(self, path: Path | str, capacity: int = 10_000, retain_s: float = MAX_AGE_LIMIT_S):
        self.path = Path(path)
        self.capacity = capacity
        self.retain_s = retain_s
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, ts REAL NOT NULL)"
                " WITHOUT ROWID"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS nonces_ts ON nonces(ts)")
        except (OSError, sqlite3.Error) as exc:
            raise NonceStoreError(
                f"{self.path}: cannot open the command nonce store ({exc}); check that the data "
                f"directory is writable. If the file is damaged, stop edge-alarm, wait "
                f"{MAX_AGE_LIMIT_S} s (so no recorded command is still valid) and move it aside"
            ) from exc

    def add(self, nonce: str, ts: dt.datetime, now: dt.datetime) -> NonceStatus:
        """Record ``nonce`` unless it is already there or the store is full (durable on return)."""
        try:
            with self._lock, immediate(self._db):
                return self._add(nonce, ts.timestamp(), now.timestamp() - self.retain_s)
        except sqlite3.Error as exc:
            raise NonceStoreError(f"{self.path}: cannot record a command nonce ({exc})") from exc

    def _add(self, nonce: str, ts: float, cutoff: float) -> NonceStatus:
        self._db.execute("DELETE FROM nonces WHERE ts < ?", (cutoff,))
        if self._db.execute("SELECT 1 FROM nonces WHERE nonce = ?", (nonce,)).fetchone():
            return "seen"
        if len(self) >= self.capacity:
            return "full"
        self._db.execute("INSERT INTO nonces (nonce, ts) VALUES (?, ?)", (nonce, ts))
        return "added"

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM nonces").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- the verifier --------------------------------------------------------------------------


class CommandVerifier:
    """Turns (topic, payload) into a Command to execute or a Refusal to report."""

    def __init__(
        self,
        site_id: str,
        cfg: RemoteConfig,
        nonces: NonceStore,
        clock: Callable[[], dt.datetime] = utc_now,
    ) -> None:
        self.site_id = site_id
        self.cfg = cfg
        self._nonces = nonces
        self._clock = clock
        self._keys: dict[str, Ed25519PublicKey] = load_public_keys(cfg)  # ConfigError at start

    def verify(self, topic_name: str, payload: bytes) -> Command | Refusal:
        """``topic_name``: the ``<name>`` level of the topic, or the whole topic. Never raises."""
        try:
            result = self._verify(topic_name, payload)
        except Exception:
            log.exception("remote command: internal error while verifying it")
            return Refusal(INTERNAL, "unavailable")
        if isinstance(result, Refusal):
            log.warning("remote command refused (%s): %s", result.code, result.reason)
        else:
            log.info(
                "remote command %s accepted from operator %s (key %s, nonce %s)",
                result.name,
                result.operator,
                result.key_id,
                result.nonce,
            )
        return result

    def _verify(self, topic_name: str, payload: bytes) -> Command | Refusal:
        data = parse_payload(payload)
        if isinstance(data, Refusal):
            return data
        env = parse_envelope(data)
        if isinstance(env, Refusal):
            return env
        refusal = self._authenticate(env) or self._where(topic_name, env) or self._when(env)
        if refusal:
            return Refusal(*refusal, env.nonce, env.name, env.operator)
        if env.name not in SCHEMAS:
            why = f"{env.name!r} is not a command of this box (known: {', '.join(SCHEMAS)})"
            return Refusal(why, "unknown_command", env.nonce, env.name, env.operator)
        args = check_arguments(env.name, env.args)
        if isinstance(args, str):
            return Refusal(args, "bad_arguments", env.nonce, env.name, env.operator)
        return Command(env.name, args, env.nonce, env.ts, env.operator, env.key_id)

    def _authenticate(self, env: _Envelope) -> tuple[str, str] | None:
        from cryptography.exceptions import InvalidSignature

        key = self._keys.get(env.key_id)
        if key is None:
            return _UNKNOWN_KEY.format(key=env.key_id), "unknown_key"
        try:
            key.verify(env.sig, env.signed)
        except InvalidSignature:
            return _BAD_SIGNATURE.format(key=env.key_id), "bad_signature"
        return None

    def _where(self, topic_name: str, env: _Envelope) -> tuple[str, str] | None:
        if env.site != self.site_id:
            return (
                f"the command is for site {env.site!r}, this box is {self.site_id!r}",
                "wrong_site",
            )
        prefix = f"sites/{self.site_id}/cmd/"
        topic = topic_name.removeprefix(prefix) if topic_name.startswith(prefix) else topic_name
        if topic != env.name:
            why = f"command {env.name!r} arrived on the topic of another ({_short(topic_name)})"
            return f"{why}; publish it on {prefix}{env.name}", "wrong_site"
        return None

    def _when(self, env: _Envelope) -> tuple[str, str] | None:
        now = self._clock()
        now = now if now.tzinfo else now.replace(tzinfo=dt.timezone.utc)
        skew = (env.ts - now).total_seconds()
        if skew < -self.cfg.max_age_s:
            return _STALE.format(s=-skew, limit=self.cfg.max_age_s), "stale"
        if skew > self.cfg.max_future_s:
            return _FUTURE.format(s=skew, limit=self.cfg.max_future_s), "future"
        try:
            status = self._nonces.add(env.nonce, env.ts, now)
        except NonceStoreError as exc:
            log.error("%s", exc)
            return _STORE_FAILED, "unavailable"
        if status == "seen":
            return _REPLAYED.format(nonce=env.nonce), "replayed"
        if status == "full":
            return _FULL.format(s=MAX_AGE_LIMIT_S, n=self._nonces.capacity), "unavailable"
        return None


def result_payload(
    cmd_or_refusal: Command | Refusal,
    outcome: dict[str, Any] | None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The ``cmd/result`` JSON. ``outcome`` for a Command: None = carried out; a dict with
    ``ok`` (default true), on failure ``code`` and ``reason``, other keys go under ``result``."""
    ref = cmd_or_refusal
    body: dict[str, Any] = {"v": VERSION, "nonce": ref.nonce, "name": ref.name}
    stamp = utc_stamp(now or utc_now())
    if isinstance(ref, Refusal):
        body.update(ok=False, code=ref.code, reason=ref.reason, operator=ref.operator, ts=stamp)
        return body
    rest = dict(outcome or {})
    ok = bool(rest.pop("ok", True))
    code, reason = rest.pop("code", "failed"), rest.pop("reason", None)
    body.update(ok=ok, operator=ref.operator, ts=stamp)
    if not ok:
        body.update(code=str(code), reason=str(reason or "the box could not carry it out"))
    if rest:
        body["result"] = rest
    return body
