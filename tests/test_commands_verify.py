"""Signed remote commands: canonical form, every refusal, replay across restarts, hostile input."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import stat
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edge.config.remote import CommandKey, RemoteConfig
from edge.errors import ConfigError
from edge.uplink import signing
from edge.uplink.commands import (
    MAX_PAYLOAD_BYTES,
    Command,
    CommandVerifier,
    NonceStore,
    Refusal,
    result_payload,
)
from edge.uplink.signing import canonical_bytes, private_key_from_seed, public_key_b64, sign_command

UTC = dt.timezone.utc
# The public description; it may be merged into protocol.md, which then must hold the vectors.
DOCS = [Path(__file__).resolve().parent.parent / "docs" / n for n in ("commands.md", "protocol.md")]
SITE = "demo-site"
# Test vector of docs/commands.md: the RFC 8032 test-1 seed, so the public key can be checked
# against the RFC (d75a9801...511a).
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
PUBLIC_B64 = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
KEY = private_key_from_seed(SEED)
OTHER_KEY = private_key_from_seed(bytes(range(32)))
VECTOR_TS = dt.datetime(2025, 1, 15, 8, 30, 0, tzinfo=UTC)
VECTORS = [
    (
        {"site": SITE, "name": "arm", "args": {"partition": "main", "mode": "full", "force": False},
         "nonce": "Q2VudHJhbC1ub25jZS0wMDAx", "ts": "2025-01-15T08:30:00.000Z",
         "operator": "op-42", "key_id": "central-1"},
        b'{"args":{"force":false,"mode":"full","partition":"main"},"key":"central-1",'
        b'"name":"arm","nonce":"Q2VudHJhbC1ub25jZS0wMDAx","operator":"op-42",'
        b'"site":"demo-site","ts":"2025-01-15T08:30:00.000Z","v":1}',
        "zzj09FIwZPdS1itkH0RgeOWJ8/yvLPTCJtS2B4fZwN4A6YnXGmOYgnTQrJQAXMRTmDjG2tE1c3u8bLrZnBscAA==",
    ),
    (
        {"site": SITE, "name": "live", "args": {"camera": "cam-1", "reason": "levée de doute"},
         "nonce": "Q2VudHJhbC1ub25jZS0wMDAy", "ts": "2025-01-15T08:30:05.250Z",
         "operator": "op-42", "key_id": "central-1"},
        '{"args":{"camera":"cam-1","reason":"levée de doute"},"key":"central-1",'
        '"name":"live","nonce":"Q2VudHJhbC1ub25jZS0wMDAy","operator":"op-42",'
        '"site":"demo-site","ts":"2025-01-15T08:30:05.250Z","v":1}'.encode(),
        "obNiSuCBY85E261GL0p4zqiQZpq2HoX6GEuC/dmegUiVdJ06pMGf+2mgFtf3GxoRvp2IU17ByulZJUdTsnYvBw==",
    ),
]  # fmt: skip


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def config(**kw: Any) -> RemoteConfig:
    return RemoteConfig(keys=[CommandKey(id="central-1", public_key=PUBLIC_B64)], **kw)


@pytest.fixture
def clock() -> Clock:
    return Clock(VECTOR_TS)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[NonceStore]:
    s = NonceStore(tmp_path / "data" / "nonces.db")
    yield s
    s.close()


@pytest.fixture
def verifier(store: NonceStore, clock: Clock) -> CommandVerifier:
    return CommandVerifier(SITE, config(), store, clock)


def payload(name: str = "arm", args: dict[str, Any] | None = None, **kw: Any) -> bytes:
    opts: dict[str, Any] = {"key_id": "central-1", "site": SITE, "operator": "op-42"}
    opts["ts"] = VECTOR_TS
    opts.update(kw)
    key = opts.pop("private_key", KEY)
    body = sign_command(
        key, name=name, args={"partition": "main"} if args is None else args, **opts
    )
    return json.dumps(body).encode()


def edit(raw: bytes, **changes: Any) -> bytes:
    body = json.loads(raw)
    body.update(changes)
    return json.dumps(body).encode()


# --- canonical form and test vector ---------------------------------------------------------


@pytest.mark.parametrize(("fields", "canonical", "sig"), VECTORS)
def test_vector_canonical_bytes_and_signature(
    fields: dict[str, Any], canonical: bytes, sig: str
) -> None:
    assert public_key_b64(KEY) == PUBLIC_B64
    assert KEY.public_key().public_bytes_raw().hex().startswith("d75a980182b10ab7")
    assert canonical_bytes(**fields) == canonical
    assert base64.b64encode(KEY.sign(canonical)).decode() == sig
    body = sign_command(KEY, **fields)
    assert body["sig"] == sig
    docs = "".join(p.read_text(encoding="utf-8") for p in DOCS if p.exists())
    assert sig in docs and canonical.decode() in docs and PUBLIC_B64 in docs


@pytest.mark.parametrize(("fields", "canonical", "sig"), VECTORS)
def test_vector_payload_is_accepted(
    verifier: CommandVerifier, fields: dict[str, Any], canonical: bytes, sig: str
) -> None:
    body = sign_command(KEY, **fields)
    result = verifier.verify(fields["name"], json.dumps(body, ensure_ascii=False).encode())
    assert isinstance(result, Command), result
    assert result.nonce == fields["nonce"] and result.key_id == "central-1"


def test_canonical_form_refuses_what_other_languages_spell_differently() -> None:
    base = dict(site=SITE, name="output", nonce="n" * 16, ts="x", operator="o", key_id="k")
    for bad in ({"seconds": 1.5}, {"n": 2**53}, {"t": "\ud800"}, {"x": float("nan")}):
        with pytest.raises(ValueError):
            canonical_bytes(args=bad, **base)


# --- acceptance -----------------------------------------------------------------------------


def test_valid_command_accepted_with_defaults(verifier: CommandVerifier) -> None:
    result = verifier.verify("arm", payload(nonce="n-accepted-000001"))
    assert result == Command(
        name="arm",
        args={"partition": "main", "mode": "full", "force": False},
        nonce="n-accepted-000001",
        ts=VECTOR_TS,
        operator="op-42",
        key_id="central-1",
    )


def test_full_topic_and_payload_at_the_size_limit_are_accepted(verifier: CommandVerifier) -> None:
    raw = payload("output", {"output": "siren", "op": "pulse", "seconds": 5})
    padded = raw + b" " * (MAX_PAYLOAD_BYTES - len(raw))  # JSON allows trailing whitespace
    result = verifier.verify(f"sites/{SITE}/cmd/output", padded)
    assert isinstance(result, Command)
    assert result.args == {"output": "siren", "op": "pulse", "seconds": 5}


@pytest.mark.parametrize("skew", [-40, 20])
def test_window_edges_are_accepted(verifier: CommandVerifier, skew: int) -> None:
    ts = VECTOR_TS + dt.timedelta(seconds=skew)
    assert isinstance(verifier.verify("arm", payload(ts=ts)), Command)


# --- refusals, in verification order --------------------------------------------------------

GOOD = payload(nonce="good-nonce-0000001")
REFUSALS = [
    ("too_large", GOOD + b" " * MAX_PAYLOAD_BYTES, "accepts at most 16384"),
    ("bad_json", b"\xff\xfe{}", "not UTF-8"),
    ("bad_json", b"{not json", "not valid JSON"),
    ("bad_json", b"[1, 2]", "JSON object"),
    ("bad_json", b'{"v": 1, "v": 1}', "same key twice"),
    ("bad_json", b'{"v": NaN}', "NaN is not JSON"),
    ("bad_json", b'{"args": ' + b"[" * 9 + b"]" * 9 + b"}", "deeper than 8"),
    ("bad_json", edit(GOOD, extra=1), "unknown field 'extra'"),
    ("bad_json", edit(GOOD, v=2), "this box speaks v=1"),
    ("bad_json", edit(GOOD, v=True), "this box speaks v=1"),
    ("bad_json", edit(GOOD, nonce="short"), "'nonce' must be 16 to 64"),
    ("bad_json", edit(GOOD, ts="2025-01-15T08:30:00"), "'ts' must be a UTC ISO 8601"),
    ("bad_json", edit(GOOD, ts="2025-02-30T08:30:00Z"), "not a real date"),
    ("bad_json", edit(GOOD, args=["main"]), "'args' must be a JSON object"),
    ("bad_json", edit(GOOD, args={"seconds": 1.5}), "float values cannot be signed"),
    ("bad_json", edit(GOOD, sig="AAAA"), "'sig' must be a base64 Ed25519"),
    ("unknown_key", payload(key_id="central-9"), "'central-9' is not provisioned"),
    ("bad_signature", edit(GOOD, args={"partition": "shop"}), "does not match"),
    ("bad_signature", payload(private_key=OTHER_KEY), "does not match"),
    ("bad_signature", edit(GOOD, operator="op-43"), "does not match"),
    ("wrong_site", payload(site="other-site"), "for site 'other-site'"),
    ("stale", payload(ts=VECTOR_TS - dt.timedelta(seconds=41)), "41 s before"),
    ("future", payload(ts=VECTOR_TS + dt.timedelta(seconds=21)), "21 s after"),
    ("unknown_command", payload("selfdestruct", {}), "'selfdestruct' is not a command"),
]


@pytest.mark.parametrize(("code", "raw", "words"), REFUSALS)
def test_refusal_codes_and_reasons(
    verifier: CommandVerifier, store: NonceStore, code: str, raw: bytes, words: str
) -> None:
    name = json.loads(raw)["name"] if code not in ("too_large", "bad_json") else "arm"
    result = verifier.verify(name, raw)
    assert isinstance(result, Refusal)
    assert (result.code, words in result.reason) == (code, True), result
    assert len(store) == (1 if code == "unknown_command" else 0)  # nonce only after sig + time


def test_topic_of_another_command_is_refused(verifier: CommandVerifier) -> None:
    for topic in ("disarm", f"sites/{SITE}/cmd/disarm", "sites/other-site/cmd/arm"):
        result = verifier.verify(topic, payload())
        assert isinstance(result, Refusal) and result.code == "wrong_site", topic
        assert "publish it on sites/demo-site/cmd/arm" in result.reason


BAD_ARGS = [
    ("arm", {}, "'partition' is required"),
    ("arm", {"partition": "main", "zone": "z1"}, "unknown argument 'zone'"),
    ("arm", {"partition": "Main"}, "must be an id"),
    ("arm", {"partition": "main", "mode": "half"}, "one of full, part"),
    ("arm", {"partition": "main", "force": 1}, "true or false"),
    ("disarm", {"partition": "main", "mode": "full"}, "unknown argument 'mode'"),
    ("bypass", {"zone": "x" * 33}, "must be an id"),
    ("output", {"output": "siren", "op": "blink"}, "one of on, off, pulse"),
    ("output", {"output": "siren", "op": "pulse", "seconds": 0}, "from 1 to 3600"),
    ("output", {"output": "siren", "op": "on", "seconds": True}, "from 1 to 3600"),
    ("output", {"output": "siren", "op": "off", "seconds": 5}, "does not apply to op 'off'"),
    ("restart", {"service": "sshd"}, "one of alarm, video, broker"),
    ("diag", {"verbose": True}, "allowed: none"),
    ("live", {"camera": "cam-1", "reason": "a\nb"}, "no control characters"),
    ("patrol", {"camera": "cam-1", "reason": "x" * 201}, "at most 200"),
]


@pytest.mark.parametrize(("name", "args", "words"), BAD_ARGS)
def test_bad_arguments(
    verifier: CommandVerifier, name: str, args: dict[str, Any], words: str
) -> None:
    result = verifier.verify(name, payload(name, args))
    assert isinstance(result, Refusal) and result.code == "bad_arguments", result
    assert words in result.reason and result.reason.startswith(f"{name}: ")
    assert (result.name, result.operator) == (name, "op-42")


# --- replay protection ----------------------------------------------------------------------


def test_replay_is_refused(verifier: CommandVerifier) -> None:
    raw = payload(nonce="replay-nonce-0001")
    assert isinstance(verifier.verify("arm", raw), Command)
    again = verifier.verify("arm", raw)
    assert isinstance(again, Refusal) and again.code == "replayed"
    assert again.nonce == "replay-nonce-0001" and "already used" in again.reason


def test_replay_is_refused_after_a_restart(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "nonces.db"
    raw = payload(nonce="restart-nonce-001")
    first = NonceStore(path)
    assert isinstance(CommandVerifier(SITE, config(), first, clock).verify("arm", raw), Command)
    first.close()
    reopened = NonceStore(path)
    result = CommandVerifier(SITE, config(), reopened, clock).verify("arm", raw)
    reopened.close()
    assert isinstance(result, Refusal) and result.code == "replayed"


def test_unsigned_messages_cannot_burn_a_nonce(
    verifier: CommandVerifier, store: NonceStore
) -> None:
    raw = payload(nonce="precious-nonce-01")
    forged = edit(raw, args={"partition": "shop"})
    result = verifier.verify("arm", forged)
    assert isinstance(result, Refusal) and result.code == "bad_signature"
    assert (result.nonce, result.name, result.operator) == ("precious-nonce-01", "arm", "op-42")
    assert len(store) == 0
    assert isinstance(verifier.verify("arm", raw), Command)


def test_store_forgets_expired_nonces_and_refuses_when_full(tmp_path: Path, clock: Clock) -> None:
    store = NonceStore(tmp_path / "n.db", capacity=3)
    v = CommandVerifier(SITE, config(), store, clock)
    for i in range(3):
        assert isinstance(v.verify("arm", payload(nonce=f"fill-nonce-{i:06d}")), Command)
    full = v.verify("arm", payload(nonce="fill-nonce-999999"))
    assert isinstance(full, Refusal) and full.code == "unavailable" and "retry" in full.reason
    assert len(store) == 3
    clock.now += dt.timedelta(seconds=store.retain_s + 1)
    later = payload(nonce="later-nonce-00001", ts=clock.now)
    assert isinstance(v.verify("arm", later), Command)
    assert len(store) == 1
    store.close()


def test_broken_store_is_refused_not_raised(tmp_path: Path, clock: Clock) -> None:
    store = NonceStore(tmp_path / "n.db")
    v = CommandVerifier(SITE, config(), store, clock)
    store.close()  # every later database call fails
    result = v.verify("arm", payload())
    assert isinstance(result, Refusal) and result.code == "unavailable"


# --- results --------------------------------------------------------------------------------


def test_result_payloads(verifier: CommandVerifier) -> None:
    cmd = verifier.verify("arm", payload(nonce="result-nonce-0001"))
    assert isinstance(cmd, Command)
    now = VECTOR_TS + dt.timedelta(seconds=1)
    assert result_payload(cmd, None, now) == {
        "v": 1, "nonce": "result-nonce-0001", "name": "arm", "ok": True,
        "operator": "op-42", "ts": "2025-01-15T08:30:01.000Z",
    }  # fmt: skip
    failed = result_payload(cmd, {"ok": False, "code": "open_zones", "reason": "z1 open", "z": 1})
    assert (failed["ok"], failed["code"], failed["reason"], failed["result"]) == (
        False, "open_zones", "z1 open", {"z": 1},
    )  # fmt: skip
    refused = verifier.verify("arm", payload(nonce="result-nonce-0001"))
    assert isinstance(refused, Refusal)
    body = result_payload(refused, None, now)
    assert body["ok"] is False and body["code"] == "replayed"
    assert body["nonce"] == "result-nonce-0001" and json.loads(json.dumps(body)) == body
    garbage = result_payload(verifier.verify("arm", b"\x00"), None, now)
    assert (garbage["nonce"], garbage["code"]) == (None, "bad_json")


# --- configuration and keys -----------------------------------------------------------------


def test_public_key_from_a_pem_file(tmp_path: Path, clock: Clock, store: NonceStore) -> None:
    from cryptography.hazmat.primitives import serialization

    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "central.pub").write_bytes(pem)
    cfg = RemoteConfig(
        keys=[CommandKey(id="central-1", public_key_file="central.pub")], keys_dir=str(tmp_path)
    )
    assert isinstance(CommandVerifier(SITE, cfg, store, clock).verify("arm", payload()), Command)


def test_config_errors_say_what_to_fix(tmp_path: Path, store: NonceStore) -> None:
    with pytest.raises(ValidationError, match="exactly one of public_key"):
        CommandKey(id="k")
    with pytest.raises(ValidationError, match="32 bytes"):
        CommandKey(id="k", public_key=base64.b64encode(b"short").decode())
    with pytest.raises(ValidationError, match="appears more than once"):
        RemoteConfig(keys=[CommandKey(id="k", public_key=PUBLIC_B64)] * 2)
    with pytest.raises(ValidationError):
        RemoteConfig(max_age_s=3600)
    (tmp_path / "junk.pub").write_text("not a key\n")
    cfg = RemoteConfig(
        keys=[
            CommandKey(id="missing", public_key_file="nope.pub"),
            CommandKey(id="junk", public_key_file="junk.pub"),
        ],
        keys_dir=str(tmp_path),
    )
    with pytest.raises(ConfigError) as err:
        CommandVerifier(SITE, cfg, store)
    assert "id='missing'" in str(err.value) and "fix the path" in str(err.value)
    assert "id='junk'" in str(err.value) and "neither PEM nor base64" in str(err.value)


def test_alarm_side_import_does_not_load_cryptography() -> None:
    code = "import sys, edge.uplink.commands; print('cryptography' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_keygen_and_sign_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store: NonceStore
) -> None:
    keyfile = tmp_path / "central.key"
    assert signing.main(["keygen", str(keyfile), "--id", "central-2"]) == 0
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    public = capsys.readouterr().out.split('public_key = "')[1].split('"')[0]
    assert signing.main(["keygen", str(keyfile)]) != 0  # never overwrites a key
    assert "never overwrites" in capsys.readouterr().err
    argv = ["sign", "--key", str(keyfile), "--key-id", "central-2", "--site", SITE,
            "--operator", "op-7", "output", '{"output":"gate","op":"on"}']  # fmt: skip
    assert signing.main(argv) == 0
    out = capsys.readouterr()
    assert f"sites/{SITE}/cmd/output" in out.err
    cfg = RemoteConfig(keys=[CommandKey(id="central-2", public_key=public)])
    result = CommandVerifier(SITE, cfg, store).verify("output", out.out.encode())
    assert isinstance(result, Command) and result.operator == "op-7"


# --- hostile input: never raises, stays bounded ---------------------------------------------

HYPO = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
ACCEPTABLE = {"bad_json", "too_large", "unknown_key", "bad_signature"}


def check_refused(verifier: CommandVerifier, topic: str, raw: bytes) -> None:
    result = verifier.verify(topic, raw)
    assert isinstance(result, Refusal), result
    assert result.code in ACCEPTABLE, result


@HYPO
@given(
    raw=st.binary(max_size=300)
    | st.binary(min_size=1, max_size=64).map(lambda b: b * (MAX_PAYLOAD_BYTES // len(b) + 1))
)
def test_arbitrary_bytes_are_refused(verifier: CommandVerifier, raw: bytes) -> None:
    check_refused(verifier, "arm", raw)


@HYPO
@given(value=json_values, depth=st.integers(0, 40))
def test_random_json_is_refused(verifier: CommandVerifier, value: Any, depth: int) -> None:
    check_refused(verifier, "arm", ("[" * depth + json.dumps(value) + "]" * depth).encode())


@HYPO
@given(
    fields=st.fixed_dictionaries(
        {
            f: json_values | st.text(min_size=16, max_size=90)
            for f in ("site", "name", "args", "nonce", "ts", "operator", "key", "sig")
        }
    ),
    good=st.sets(st.sampled_from(["site", "name", "args", "nonce", "ts", "operator", "key"])),
)
def test_right_shape_random_values_are_refused(
    verifier: CommandVerifier, fields: dict[str, Any], good: set[str]
) -> None:
    body = json.loads(GOOD)
    body.update({k: v for k, v in fields.items() if k not in good})
    if all(body[k] == v for k, v in json.loads(GOOD).items()):
        return  # hypothesis rebuilt the genuine command
    check_refused(verifier, "arm", json.dumps(body).encode())


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[Clock, NonceStore, CommandVerifier]]:
    """Kept across hypothesis examples on purpose: the store must stay bounded over all."""
    clock = Clock(VECTOR_TS)
    store = NonceStore(tmp_path / "bounded.db", capacity=5)
    yield clock, store, CommandVerifier(SITE, config(), store, clock)
    store.close()


@HYPO
@given(
    name=st.sampled_from(["arm", "disarm", "bypass", "output", "diag", "restart", "live", "x"]),
    args=st.sampled_from([{"partition": "main"}, {"zone": "z1"}, {"service": "video"}, {}])
    | st.dictionaries(
        st.sampled_from(["partition", "zone", "op", "seconds", "camera", "q"]),
        json_values,
        max_size=3,
    ),
    nonce=st.just("repeated-nonce-01") | st.uuids().map(lambda u: u.hex[:20]),
    skew=st.integers(-50, 30),
    step=st.integers(0, 30),
)
def test_signed_random_commands_never_raise_and_store_stays_bounded(
    small: tuple[Clock, NonceStore, CommandVerifier],
    name: str,
    args: dict[str, Any],
    nonce: str,
    skew: int,
    step: int,
) -> None:
    clock, store, verifier = small
    clock.now += dt.timedelta(seconds=step)
    try:
        raw = payload(name, args, nonce=nonce, ts=clock.now + dt.timedelta(seconds=skew))
    except ValueError:
        return  # the signer itself refuses floats and huge integers
    result = verifier.verify(name, raw)
    assert isinstance(result, (Command, Refusal))
    if isinstance(result, Refusal):
        assert result.code != "unavailable" or "more than 5 commands" in result.reason
    assert len(store) <= 5


def test_huge_and_deep_payloads_stay_small_in_memory(verifier: CommandVerifier) -> None:
    unit = b"[" * 7 + b"]" * 7
    wide = b"[" + b",".join([unit] * (MAX_PAYLOAD_BYTES // (len(unit) + 1) - 1)) + b"]"
    cases = [wide, b"[" * MAX_PAYLOAD_BYTES, b"[" * (10 * MAX_PAYLOAD_BYTES), b"9" * 16_000]
    assert len(wide) <= MAX_PAYLOAD_BYTES
    for raw in cases:
        tracemalloc.start()
        try:
            result = verifier.verify("arm", raw)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert isinstance(result, Refusal) and result.code in ("bad_json", "too_large")
        assert peak < 4 * 1024 * 1024, (len(raw), peak)
