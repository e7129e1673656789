"""ICE servers of live sessions: TURN REST credentials, the configured list, and its checks.

The TURN REST vector is computed here independently of the box's code, from the coturn
``use-auth-secret`` rule: user ``<expiry>:<name>``, password base64(HMAC-SHA1(secret, user)).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.config import parse_config
from edge.config.live import IceServer, LiveConfig
from edge.errors import ConfigError
from edge.video.live.ice import ice_servers, rtc_configuration, turn_rest_credentials

NOW = 1_767_268_800.75  # 2026-01-01T12:00:00.75Z: the fraction must be dropped
SECRET = b"north-gate-shared-secret"


def expected(secret: bytes, user: str) -> str:
    return base64.b64encode(hmac.new(secret, user.encode("utf-8"), hashlib.sha1).digest()).decode()


def live(*servers: dict[str, Any]) -> LiveConfig:
    return LiveConfig.model_validate({"ice_servers": list(servers)})


def test_turn_rest_credentials_match_the_coturn_scheme() -> None:
    user, password = turn_rest_credentials(SECRET, "site-a-s1", 3600, NOW)
    assert user == "1767272400:site-a-s1"
    assert password == expected(SECRET, "1767272400:site-a-s1")
    assert len(base64.b64decode(password)) == 20  # a SHA-1 digest


def test_turn_rest_credentials_known_vector() -> None:
    # HMAC-SHA1("secret", "1000:alice") computed once with openssl dgst -sha1 -hmac.
    user, password = turn_rest_credentials(b"secret", "alice", 400, 600.9)
    assert user == "1000:alice"
    assert password == expected(b"secret", "1000:alice")
    assert password == "6L+E1YAMNKLM/muDqj3WC+RrDLc="


def test_stun_only_has_no_credentials() -> None:
    cfg = live({"urls": ["stun:stun.example.net:3478", "stuns:stun.example.net:5349"]})
    assert ice_servers(cfg, "site-a-s1", NOW) == [
        {"urls": ["stun:stun.example.net:3478", "stuns:stun.example.net:5349"]}
    ]


def secret_file(tmp_path: Path, name: str, content: bytes, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    path.chmod(mode)
    return path


def test_static_turn_password_comes_from_its_secret_file(tmp_path: Path) -> None:
    password = secret_file(tmp_path, "turn-password", b"p4ss\n")
    url = "turn:turn.example.net:3478?transport=udp"
    cfg = live({"urls": [url], "username": "u", "credential_file": str(password)})
    assert ice_servers(cfg, "x", NOW) == [{"urls": [url], "username": "u", "credential": "p4ss"}]


def test_a_turn_password_inline_in_site_toml_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        IceServer.model_validate(
            {"urls": ["turn:t.example.net"], "username": "u", "credential": "p"}
        )
    assert "give credential_file instead" in str(info.value)


def test_a_turn_secret_readable_by_others_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shared = secret_file(tmp_path, "turn-secret", SECRET, mode=0o644)
    cfg = live({"urls": ["turn:turn.example.net"], "rest_secret_file": str(shared)})
    with caplog.at_level(logging.WARNING, logger="edge.video.live.ice"):
        assert ice_servers(cfg, "x", NOW) == []
    assert f"chmod 600 {shared}" in caplog.text and "skipped" in caplog.text


def test_turn_rest_mints_per_name_credentials_from_the_secret_file(tmp_path: Path) -> None:
    secret = secret_file(tmp_path, "turn-secret", SECRET + b"\n")  # newline not in it
    cfg = live(
        {"urls": ["stun:stun.example.net"]},
        {
            "urls": ["turns:turn.example.net:5349"],
            "rest_secret_file": str(secret),
            "rest_ttl_s": 600,
        },
    )
    stun, turn = ice_servers(cfg, "site-a-s1", NOW)
    assert stun == {"urls": ["stun:stun.example.net"]}
    assert turn["urls"] == ["turns:turn.example.net:5349"]
    assert turn["username"] == "1767269400:site-a-s1"
    assert turn["credential"] == expected(SECRET, "1767269400:site-a-s1")
    other = ice_servers(cfg, "site-a-s2", NOW)[1]
    assert other["credential"] != turn["credential"], "each session gets its own credentials"


@pytest.mark.parametrize("content", [None, b"", b"  \n"], ids=["missing", "empty", "blank"])
def test_unusable_secret_file_skips_that_server_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes | None
) -> None:
    secret = tmp_path / "turn-secret"
    if content is not None:
        secret_file(tmp_path, "turn-secret", content)
    cfg = live(
        {"urls": ["stun:stun.example.net"]},
        {"urls": ["turn:turn.example.net"], "rest_secret_file": str(secret)},
    )
    with caplog.at_level(logging.WARNING, logger="edge.video.live.ice"):
        servers = ice_servers(cfg, "x", NOW)
    assert servers == [{"urls": ["stun:stun.example.net"]}]
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert "turn:turn.example.net" in text and str(secret) in text and "skipped" in text


def test_no_servers_means_no_stun_at_all() -> None:
    assert ice_servers(LiveConfig(), "x", NOW) == []
    assert rtc_configuration([]).iceServers == []


def test_rtc_configuration_carries_every_server() -> None:
    conf = rtc_configuration(
        [
            {"urls": ["stun:s.example.net"]},
            {"urls": ["turn:t.example.net"], "username": "u", "credential": "p"},
        ]
    )
    assert conf.iceServers is not None
    assert [(s.urls, s.username, s.credential) for s in conf.iceServers] == [
        (["stun:s.example.net"], None, None),
        (["turn:t.example.net"], "u", "p"),
    ]


# -- configuration checks ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("server", "says"),
    [
        ({"urls": ["turn:t.example.net"]}, "a TURN server needs username and credential_file"),
        (
            {"urls": ["turn:t.example.net"], "username": "u"},
            "give both username and credential_file",
        ),
        (
            {
                "urls": ["turn:t.example.net"],
                "username": "u",
                "credential_file": "/etc/edge/secrets/turn-password",
                "rest_secret_file": "/etc/edge/secrets/turn",
            },
            "either username/credential_file or rest_secret_file, not both",
        ),
        ({"urls": ["http://t.example.net"]}, "must start with one of stun:, stuns:, turn:, turns:"),
        (
            {"urls": ["stun:s.example.net"], "username": "u", "credential_file": "/p"},
            "credentials only apply to turn: or turns: URLs",
        ),
    ],
    ids=["turn-no-credentials", "half-static", "static-and-rest", "bad-scheme", "stun-creds"],
)
def test_ice_server_mistakes_are_explained(server: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError) as info:
        IceServer.model_validate(server)
    assert says in str(info.value)


def test_ice_server_mistake_in_site_toml_names_file_line_and_key() -> None:
    text = (
        '[site]\nid = "site-a"\n\n[live]\n\n[[live.ice_servers]]\n'
        'urls = ["turn:turn.example.net:3478"]\n'
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    (problem,) = info.value.problems
    assert problem.startswith("site.toml:"), problem
    assert "live.ice_servers[0]" in problem
    assert "a TURN server needs username and credential_file, or rest_secret_file" in problem
    assert "Traceback" not in str(info.value)
