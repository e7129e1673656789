"""Hostile configuration: whatever the file holds, the answer is a configuration or exit 78.

Three parts: control characters in any key or value (through the real CLI and services), the
one secret-file rule applied to every key file the configuration names, and a fuzz of the
loader with raw bytes, raw text and TOML documents built from a valid site with mutated values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import load_config, parse_config
from edge.config.dc09 import Dc09Config
from edge.config.load import MAX_CONFIG_BYTES
from edge.config.models import UNPRINTABLE
from edge.config.remote import CommandKey, RemoteConfig
from edge.errors import EX_CONFIG, CommandError, ConfigError
from edge.uplink.signing import (
    generate_private_key,
    load_private_key,
    load_public_keys,
    private_key_pem,
    public_key_b64,
)

EDGE = str(Path(sys.executable).with_name("edge"))
HEX_KEY = "00112233445566778899AABBCCDDEEFF"
BASE = '[site]\nid = "t-site"\n'


def edge(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EDGE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    return info.value.problems


# --- control characters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "line"),
    [("paths", "data_dir", 4), ("paths", "run_dir", 4), ("web", "credentials_file", 4)],
)
def test_nul_in_a_path_is_exit_78_with_file_line_key(
    tmp_path: Path, section: str, key: str, line: int
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(BASE + f'[{section}]\n{key} = "/var/lib/a\\u0000b"\n')
    for argv in (["config", "check", str(site)], ["run", "alarm", "--config", str(site)]):
        out = edge(*argv)
        assert out.returncode == EX_CONFIG, out.stderr
        assert "Traceback" not in out.stderr
        assert (
            f"{site}:{line}: {section}.{key}: the value contains a NUL byte (U+0000)" in out.stderr
        )
        assert "— remove it" in out.stderr


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("a\\u001b[2Jb", "U+001B"),  # terminal escape
        ("a\\nlisten 1883", "U+000A"),  # a line added to a generated file
        ("a\\tb", "U+0009"),
        ("a\\u007fb", "U+007F"),
        ("a\\u0085b", "U+0085"),
        ("a\\u2028b", "U+2028"),
        ("a\\u202eb", "U+202E"),  # right-to-left override
    ],
)
def test_every_string_field_refuses_control_characters(value: str, code: str) -> None:
    samples = [
        f'[site]\nid = "t-site"\nname = "{value}"\n',
        BASE + f'[central]\nhost = "c.example"\nkey_file = "{value}"\n',
        BASE + f'[[video.cameras]]\nid = "cam"\nsource = "rtsp"\nurl = "rtsp://{value}/"\n',
        BASE + f'[live]\n[[live.ice_servers]]\nurls = ["stun:{value}"]\n',
    ]
    for text in samples:
        found = problems(text)
        assert len(found) == 1, found
        assert code in found[0] and "remove it" in found[0]
        assert not UNPRINTABLE.search(found[0])  # the message itself stays printable


def test_control_characters_in_keys_are_named_escaped() -> None:
    (msg,) = problems(BASE + '[paths]\n"data\\u0000dir" = "x"\n')
    assert msg.startswith(
        'site.toml:3: paths."data\\u0000dir": the key contains a NUL byte'
    )  # table line
    (msg,) = problems(BASE + '[dc09]\naccount = "1234"\nprimary = { host = "h", port = 1 }\n'
                      'zones = { "do\\u001bor" = 1 }\n')  # fmt: skip
    assert "U+001B" in msg and "\x1b" not in msg


def test_models_refuse_control_characters_without_the_loader() -> None:
    with pytest.raises(ValueError, match="NUL byte"):
        Dc09Config.model_validate(
            {"account": "1234", "primary": {"host": "h", "port": 1}, "key_file": "a\0b"}
        )
    with pytest.raises(ValueError, match=r"U\+000A"):
        RemoteConfig(keys_dir="/etc/edge/sec\nrets")


# --- the site file itself ----------------------------------------------------------------------


def test_site_file_must_be_a_small_regular_utf8_file(tmp_path: Path) -> None:
    start = time.monotonic()
    for path, words in [
        ("/dev/zero", "not a regular file"),
        (str(tmp_path), "is a directory"),
        (f"{tmp_path}/a\0b", "NUL byte"),
    ]:
        with pytest.raises(ConfigError, match=words):
            load_config(path)
    assert time.monotonic() - start < 2
    big = tmp_path / "big.toml"
    big.write_bytes(BASE.encode() + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError, match="larger than"):
        load_config(big)
    latin = tmp_path / "latin.toml"
    latin.write_bytes(BASE.encode() + b'[paths]\ndata_dir = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(latin)


def test_nesting_and_symlink_loops_are_configuration_errors(tmp_path: Path) -> None:
    (msg,) = problems(BASE + "x = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deeply" in msg
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    site = tmp_path / "site.toml"
    site.write_text(BASE + '[paths]\ndata_dir = "loop"\n')
    with pytest.raises(ConfigError, match=r"site\.toml:4: paths\.data_dir: .*cannot be resolved"):
        load_config(site)


# --- every key file follows the secret-file rule -----------------------------------------------


def key_file(tmp_path: Path, mode: int = 0o600, text: str = HEX_KEY) -> Path:
    path = tmp_path / "dc09.key"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def dc09_site(key: str) -> str:
    return BASE + (
        f'[dc09]\naccount = "1234"\nkey_file = "{key}"\nprimary = {{ host = "h", port = 9000 }}\n'
    )


def test_dc09_key_file_dev_zero_is_refused_at_once(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(dc09_site("/dev/zero"))
    start = time.monotonic()
    out = edge("config", "check", str(site), timeout=20)
    assert out.returncode == EX_CONFIG and "Traceback" not in out.stderr
    assert f"{site}:5: dc09.key_file: /dev/zero is not a regular file" in out.stderr
    assert time.monotonic() - start < 15  # it used to read 22 GB and die of memory


def test_dc09_key_file_kinds_and_modes(tmp_path: Path) -> None:
    assert problems(dc09_site(str(key_file(tmp_path, 0o644))))[0].endswith(
        f"— chmod 600 {tmp_path}/dc09.key"
    )
    link = tmp_path / "link.key"
    link.symlink_to(key_file(tmp_path))
    assert "symbolic link" in problems(dc09_site(str(link)))[0]
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    assert "not a regular file" in problems(dc09_site(str(fifo)))[0]
    big = key_file(tmp_path, text="0" * 5000)
    assert "larger than 1024 bytes" in problems(dc09_site(str(big)))[0]
    assert parse_config(dc09_site(str(key_file(tmp_path)))).dc09 is not None


def test_dc09_key_is_checked_by_its_reader_only(tmp_path: Path) -> None:
    """edge-video and `edge panel` load the same site file without access to the DC-09 key
    (edge's, 0600): they must not fail on it. The reader (edge-alarm, root) still checks it."""
    key = key_file(tmp_path, text="not a key")
    text = dc09_site(str(key))
    with pytest.raises(ConfigError, match="key_file"):
        parse_config(text)  # the reader sees the broken key
    for parent in (tmp_path, *tmp_path.parents):  # traversable, as /etc/edge/secrets is
        parent.chmod(parent.stat().st_mode | 0o001)
    os.seteuid(65534)  # another service's user, in this process
    try:
        assert parse_config(text).dc09 is not None
    finally:
        os.seteuid(0)


def central_site(key: str) -> str:
    return BASE + f'[central]\nhost = "c.example"\nkey_file = "{key}"\n'


def test_central_tls_key_follows_the_rule_but_may_be_missing(tmp_path: Path) -> None:
    assert parse_config(central_site(str(tmp_path / "absent.key"))).central is not None
    (msg,) = problems(central_site(str(key_file(tmp_path, 0o640))))
    assert msg.startswith("site.toml:5: central.key_file: ") and "chmod 600" in msg
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo)
    assert "not a regular file" in problems(central_site(str(fifo)))[0]
    link = tmp_path / "link.key"
    link.symlink_to(key_file(tmp_path))
    assert "symbolic link" in problems(central_site(str(link)))[0]


def test_remote_public_key_files_are_small_regular_files(tmp_path: Path) -> None:
    pub = tmp_path / "central.pub"
    pub.write_text(public_key_b64(generate_private_key()) + "\n")
    cfg = RemoteConfig(
        keys_dir=str(tmp_path),
        keys=[
            CommandKey(id="good", public_key_file="central.pub"),
            CommandKey(id="zero", public_key_file="/dev/zero"),
            CommandKey(id="dir", public_key_file="."),
        ],
    )
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        load_public_keys(cfg)
    assert time.monotonic() - start < 2
    text = str(info.value)
    assert "id='zero'" in text and "/dev/zero is not a regular file" in text
    assert "id='dir'" in text and "is a directory" in text
    assert "id='good'" not in text


def test_no_private_key_inline_and_private_key_files_follow_the_rule(tmp_path: Path) -> None:
    key = generate_private_key()
    pem = private_key_pem(key).decode()
    body = pem.splitlines()[1]
    for pasted in (pem.replace("\n", "\\n"), pem.replace("\n", "")):  # as is, or joined
        (msg,) = problems(BASE + f'[[remote.keys]]\nid = "c1"\npublic_key = "{pasted}"\n')
        assert msg.startswith("site.toml:5: remote.keys[0](id='c1').public_key: ")
        assert body not in msg and body[:12] not in msg  # the key is never echoed
    assert "private key never goes in site.toml" in msg and "secrets directory" in msg
    path = tmp_path / "central.key"
    path.write_bytes(private_key_pem(key))
    os.chmod(path, 0o644)
    with pytest.raises(CommandError, match="chmod 600"):
        load_private_key(path)
    os.chmod(path, 0o600)
    assert public_key_b64(load_private_key(path)) == public_key_b64(key)
    with pytest.raises(CommandError, match="not a regular file"):
        load_private_key(Path("/dev/zero"))


# --- fuzz --------------------------------------------------------------------------------------

FUZZ = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
VALID: dict[str, Any] = {
    "site": {"id": "fuzz-site", "name": "Fuzz", "timezone": "UTC"},
    "paths": {"data_dir": "data", "run_dir": "run"},
    "bus": {"url": "mqtt://127.0.0.1:1883", "keepalive_s": 30},
    "hardware": {"backend": "sim", "adc": {"vref": 3.3, "sample_ms": 20}},
    "partitions": [{"id": "main", "entry_delay_s": 20, "schedules": []}],
    "zones": [
        {"id": "door", "type": "delayed", "input": {"kind": "gpio", "pin": 17}},
        {"id": "hall", "type": "instant", "input": {"kind": "adc", "channel": 0}},
    ],
    "outputs": [{"id": "siren", "pin": 22, "mode": "pulsed", "pulse_s": 1.5}],
    "siren": {"output": "siren", "cutoff_min": 3},
    "central": {"host": "central.example", "key_file": "absent-site.key"},
    "dc09": {"account": "1234", "primary": {"host": "127.0.0.1", "port": 9000}},
    "remote": {"keys": [{"id": "c1", "public_key": "A" * 43 + "="}], "max_age_s": 40},
    "live": {"ice_servers": [{"urls": ["stun:stun.example:3478"]}]},
    "web": {"port": 8080},
}
scalars = (
    st.text(max_size=12)
    | st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=6)
    | st.integers()
    | st.floats()
    | st.booleans()
    | st.sampled_from(["", "main", "door", "siren", "/dev/zero", "..", "/", "a\0b"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def toml_value(v: Any) -> str:
    """TOML for any JSON-like value (inline tables), enough for the fuzz: no TOML writer needed."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return (
            "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        )
    if isinstance(v, (int, str)):
        return json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def toml_document(doc: dict[str, Any]) -> str:
    return "".join(f"{json.dumps(k)} = {toml_value(v)}\n" for k, v in doc.items())


def paths_of(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths_of(v, (*prefix, i))
    return out


LEAVES = [p for p in paths_of(VALID) if p]


def mutate(doc: Any, path: tuple[Any, ...], value: Any, how: str) -> Any:
    doc = json.loads(json.dumps(doc))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "delete" and isinstance(parent, dict):
        del parent[last]
    elif how == "add" and isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    else:
        parent[last] = value
    return doc


def expect_config_or_error(text: str, name: str = "fuzz.toml") -> None:
    try:
        cfg = parse_config(text, name)
    except ConfigError as exc:
        assert exc.problems
        assert all(not UNPRINTABLE.search(p) for p in exc.problems), exc.problems
        return
    # accepted: then no string anywhere in it carries a control character
    assert not UNPRINTABLE.search(json.dumps(cfg.model_dump(mode="json"), ensure_ascii=False))


def test_the_fuzz_base_document_is_valid() -> None:
    parse_config(toml_document(VALID), "fuzz.toml")


@FUZZ
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(LEAVES), values, st.sampled_from(["replace", "delete", "add"])),
        min_size=1,
        max_size=3,
    )
)
def test_fuzz_valid_site_with_mutated_values(mutations: list[tuple[Any, Any, str]]) -> None:
    doc: Any = VALID
    for path, value, how in mutations:
        try:
            doc = mutate(doc, path, value, how)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or reshaped this path
    expect_config_or_error(toml_document(doc))


@FUZZ
@given(
    text=st.text(max_size=300)
    | st.lists(
        st.sampled_from(
            ['[site]\nid = "abc"\n', "[[zones]]\n", "[paths]\n", 'data_dir = "\\u0000"\n',
             "x = [[[[1]]]]\n", "a.b.c = 1\n", '"\\u001b" = 2\n', "[dc09]\n", "= \n", "[[\n",
             'key_file = "/dev/zero"\n', "pin = 99999999999999999999999\n", "t = 1979-05-27\n"]
        ),
        max_size=12,
    ).map("".join)
)  # fmt: skip
def test_fuzz_raw_text(text: str) -> None:
    expect_config_or_error(text)


@FUZZ
@given(raw=st.binary(max_size=400))
def test_fuzz_raw_bytes_through_the_file_loader(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "raw.toml"
    path.write_bytes(raw)
    try:
        load_config(path)
    except ConfigError as exc:
        assert exc.problems and not any(UNPRINTABLE.search(p) for p in exc.problems)


def test_fuzzed_documents_through_the_cli_exit_0_or_78(tmp_path: Path) -> None:
    """A few hostile documents through the real entry point: a clean exit, never a traceback."""
    docs = [
        mutate(VALID, ("paths", "data_dir"), "a\0b", "replace"),
        mutate(VALID, ("zones", 0, "input"), [[[[]]]], "replace"),
        mutate(VALID, ("dc09",), {"account": "1234", "key_file": "/dev/zero"}, "replace"),
        mutate(VALID, ("web", "credentials_file"), "\u202e/x", "replace"),
        mutate(VALID, ("site", "id"), float("nan"), "replace"),
    ]
    for n, doc in enumerate(docs):
        path = tmp_path / f"doc{n}.toml"
        path.write_text(toml_document(doc))
        out = edge("config", "check", str(path), timeout=20)
        assert out.returncode == EX_CONFIG, out.stderr
        assert "Traceback" not in out.stderr and f"{path}:" in out.stderr
