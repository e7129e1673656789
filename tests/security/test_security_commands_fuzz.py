"""Fuzz of the signed-command verifier: a hostile publisher on sites/<site>/cmd/#.

The property, whatever the topic and payload: ``verify`` returns a Refusal with a code and a
sentence, never raises, never reports an internal error, and returns a Command only when the
payload says exactly what the provisioned key signed (same fields, same values, same signature
bytes) and arrived on that command's topic. Mutations start from genuine signed commands, so
the fuzz reaches the signature, topic, time and argument checks, not only the JSON parser.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge.config.remote import CommandKey, RemoteConfig
from edge.uplink.commands import INTERNAL, Command, CommandVerifier, NonceStore, Refusal
from edge.uplink.signing import private_key_from_seed, public_key_b64, sign_command, utc_stamp

SITE = "fuzz-site"
KEY_ID = "central-1"
KEY = private_key_from_seed(bytes(range(32)))
OTHER = private_key_from_seed(bytes(range(1, 33)))  # not provisioned
NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
CODES = {
    "bad_json", "too_large", "unknown_key", "bad_signature", "wrong_site", "stale", "future",
    "replayed", "unknown_command", "bad_arguments",
}  # fmt: skip
FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
_nonces = itertools.count()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=16),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
GENUINE = [
    ("arm", {"partition": "main"}),
    ("arm", {"partition": "main", "mode": "part", "force": True}),
    ("disarm", {"partition": "main"}),
    ("output", {"output": "gate", "op": "pulse", "seconds": 5}),
    ("restart", {"service": "video"}),
    ("live", {"camera": "cam-1", "reason": "levée de doute"}),
    ("diag", {}),
]


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CommandVerifier]:
    store = NonceStore(tmp_path_factory.mktemp("nonces") / "nonces.db", capacity=100_000)
    cfg = RemoteConfig(keys=[CommandKey(id=KEY_ID, public_key=public_key_b64(KEY))])
    yield CommandVerifier(SITE, cfg, store, clock=lambda: NOW)
    store.close()


@pytest.fixture(autouse=True)
def no_internal_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    with caplog.at_level(logging.ERROR, logger="edge.uplink.commands"):
        yield
    assert not caplog.records, [r.getMessage() for r in caplog.records]


def signed(name: str, args: dict[str, Any], key: Any = KEY, **kw: Any) -> dict[str, Any]:
    nonce = f"fuzz-nonce-{next(_nonces):012d}"  # fresh on every call, also when shrinking
    return sign_command(
        key, key_id=KEY_ID, site=SITE, name=name, args=args, operator="op-1", nonce=nonce,
        ts=kw.pop("ts", NOW), **kw,
    )  # fmt: skip


def check(
    verifier: CommandVerifier, topic: str, payload: bytes, fuzzing: bool = True
) -> Command | Refusal:
    result = verifier.verify(topic, payload)
    if fuzzing:  # shown by --hypothesis-show-statistics: how deep the fuzz reaches
        event(result.code if isinstance(result, Refusal) else "accepted")
    if isinstance(result, Refusal):
        assert result.code in CODES, result
        assert result.reason and result.reason != INTERNAL
    return result


def meaning(payload: bytes) -> Any:
    """What a payload says, with the signature as bytes: equal meanings sign the same."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if isinstance(data, dict) and isinstance(data.get("sig"), str):
        with contextlib.suppress(binascii.Error, ValueError):
            data["sig"] = base64.b64decode(data["sig"], validate=True)
    return _typed(data)


def _typed(value: Any) -> Any:
    """``value`` with each scalar tagged by its JSON type: true == 1 and 1.0 == 1 in Python,
    not in a signed command (the verifier refuses "v": true)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def normalised(body: dict[str, Any]) -> Any:
    return meaning(json.dumps(body).encode())


def on_its_topic(topic: str, name: str) -> bool:
    return topic in (name, f"sites/{SITE}/cmd/{name}")


# --- sanity: the genuine commands are accepted, so refusals below mean something -------------


@pytest.mark.parametrize(("name", "args"), GENUINE)
def test_genuine_commands_are_accepted_once(
    verifier: CommandVerifier, name: str, args: dict[str, Any]
) -> None:
    payload = json.dumps(signed(name, args)).encode()
    result = check(verifier, f"sites/{SITE}/cmd/{name}", payload, fuzzing=False)
    assert isinstance(result, Command) and result.name == name
    again = check(verifier, name, payload, fuzzing=False)
    assert isinstance(again, Refusal) and again.code == "replayed"


# --- arbitrary input ---------------------------------------------------------------------------


@FUZZ
@given(
    topic=st.text(max_size=60) | st.sampled_from(["arm", f"sites/{SITE}/cmd/arm", ""]),
    payload=st.binary(max_size=400)
    | json_values.map(lambda v: json.dumps(v).encode())
    | st.sampled_from([b"", b"{}", b"null", b"[" * 10_000, b'{"v":1}' * 3000]),
)
def test_arbitrary_topics_and_payloads_are_refused(
    verifier: CommandVerifier, topic: str, payload: bytes
) -> None:
    assert isinstance(check(verifier, topic, payload), Refusal)


# --- mutated genuine commands ------------------------------------------------------------------

FIELDS = ["v", "site", "name", "args", "nonce", "ts", "operator", "key", "sig"]
# Values of the right shape, so that a mutation passes the envelope checks and reaches the
# signature, topic, time and argument checks.
plausible: dict[str, st.SearchStrategy[Any]] = {
    "v": st.sampled_from([1, 2, 0, True]),
    "site": st.sampled_from([SITE, "other-site", "fuzz-sitf"]),
    "name": st.sampled_from([n for n, _ in GENUINE] + ["bypass", "format_disk"]),
    "args": st.sampled_from([a for _, a in GENUINE] + [{"partition": "all"}, {"x": 1}]),
    "nonce": st.from_regex(r"[A-Za-z0-9_-]{16,24}", fullmatch=True),
    "ts": st.integers(-100, 100).map(lambda s: utc_stamp(NOW + dt.timedelta(seconds=s))),
    "operator": st.sampled_from(["op-1", "op-2", "admin@station"]),
    "key": st.sampled_from([KEY_ID, "central-2"]),
    "sig": st.sampled_from([KEY, OTHER]).map(
        lambda k: base64.b64encode(k.sign(b"something else")).decode()
    ),
}
mutation = st.one_of(
    st.sampled_from(FIELDS).flatmap(lambda f: st.tuples(st.just("set"), st.just(f), plausible[f])),
    st.tuples(st.just("set"), st.sampled_from(FIELDS), json_values),
    st.tuples(st.just("drop"), st.sampled_from(FIELDS), st.none()),
    st.tuples(st.just("extra"), st.text(max_size=8), json_values),
    st.tuples(st.just("arg"), st.sampled_from(["partition", "op", "seconds", "x"]), json_values),
    st.tuples(
        st.just("sig_char"), st.integers(0, 87), st.sampled_from("AB+/0=Qgw")
    ),  # one character of the signature
)


def apply(body: dict[str, Any], how: str, field: Any, value: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    if how == "set":
        body[field] = value
    elif how == "drop":
        body.pop(field, None)
    elif how == "extra":
        body[field] = value
    elif how == "arg" and isinstance(body.get("args"), dict):
        body["args"][field] = value
    elif how == "sig_char" and isinstance(body.get("sig"), str):
        sig = body["sig"]
        body["sig"] = sig[:field] + value + sig[field + 1 :]
    return body


@FUZZ
@given(
    genuine=st.sampled_from(GENUINE),
    mutations=st.lists(mutation, min_size=1, max_size=3),
    sort_keys=st.booleans(),
    topic=st.sampled_from(["own", "own-short", "other"]) | st.text(max_size=30),
)
def test_mutated_signed_commands_are_accepted_only_when_unchanged(
    verifier: CommandVerifier,
    genuine: tuple[str, dict[str, Any]],
    mutations: list[tuple[str, Any, Any]],
    sort_keys: bool,
    topic: str,
) -> None:
    name, args = genuine
    original = signed(name, args)
    body = original
    for how, field, value in mutations:
        body = apply(body, how, field, value)
    topic = {"own": f"sites/{SITE}/cmd/{name}", "own-short": name, "other": "disarm"}.get(
        topic, topic
    )
    try:
        payload = json.dumps(body, sort_keys=sort_keys, ensure_ascii=sort_keys).encode()
    except UnicodeEncodeError:  # a lone surrogate hypothesis put in a key: send it escaped
        payload = json.dumps(body).encode()
    result = check(verifier, topic, payload)
    unchanged = meaning(payload) == normalised(original)
    if isinstance(result, Command):
        assert unchanged and on_its_topic(topic, name), (body, topic)
        assert (result.name, result.operator, result.key_id) == (name, "op-1", KEY_ID)
    else:
        # a refusal of an unchanged command on its own topic would be a false refusal
        assert not (unchanged and on_its_topic(topic, name)), result


@FUZZ
@given(flips=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4))
def test_byte_flips_of_a_signed_command(
    verifier: CommandVerifier, flips: list[tuple[int, int]]
) -> None:
    original = signed("output", {"output": "gate", "op": "on"})
    raw = bytearray(json.dumps(original, separators=(",", ":")).encode())
    for at, byte in flips:
        raw[at % len(raw)] = byte
    result = check(verifier, "output", bytes(raw))
    if isinstance(result, Command):
        assert meaning(bytes(raw)) == normalised(original)
    else:
        assert meaning(bytes(raw)) != normalised(original)


@FUZZ
@given(
    name=st.text(max_size=12) | st.sampled_from([n for n, _ in GENUINE]),
    args=st.dictionaries(
        st.sampled_from(["partition", "zone", "output", "op", "seconds", "mode", "force", "x"])
        | st.text(max_size=6),
        json_values,
        max_size=4,
    ),
)
def test_validly_signed_hostile_arguments_are_checked_not_trusted(
    verifier: CommandVerifier, name: str, args: dict[str, Any]
) -> None:
    """A key holder is trusted to command, not to send malformed arguments."""
    try:
        body = signed(name, args)
    except ValueError:  # floats, lone surrogates...: the central side cannot sign these
        return
    result = check(verifier, name, json.dumps(body).encode())
    if isinstance(result, Command):
        assert result.name == name and set(result.args) >= set(args)
    else:
        assert result.code in {"bad_json", "unknown_command", "bad_arguments"}, result


@FUZZ
@given(
    name_args=st.sampled_from(GENUINE),
    skew_s=st.integers(-(10**6), 10**6),
    wrong_key=st.booleans(),
)
def test_time_window_and_key_are_always_enforced(
    verifier: CommandVerifier, name_args: tuple[str, dict[str, Any]], skew_s: int, wrong_key: bool
) -> None:
    name, args = name_args
    body = signed(
        name, args, key=OTHER if wrong_key else KEY, ts=NOW + dt.timedelta(seconds=skew_s)
    )
    result = check(verifier, name, json.dumps(body).encode())
    cfg = verifier.cfg
    if wrong_key:
        assert isinstance(result, Refusal) and result.code == "bad_signature"
    elif skew_s < -cfg.max_age_s:
        assert isinstance(result, Refusal) and result.code == "stale"
    elif skew_s > cfg.max_future_s:
        assert isinstance(result, Refusal) and result.code == "future"
    else:
        assert isinstance(result, Command)
