"""The ONVIF PTZ client against a fake camera at the HTTP boundary (edge.video.live.onvif)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.broker import free_port
from support.fake_onvif import FakeOnvifCamera, envelope

from edge.config.video import Onvif
from edge.video.live.onvif import MAX_RESPONSE_BYTES, OnvifError, get_presets, goto_preset


@pytest.fixture
def camera() -> Iterator[FakeOnvifCamera]:
    with FakeOnvifCamera(username="admin", password="s3cret <&>") as cam:
        yield cam


def onvif(cam_url: str, tmp_path: Path, password: str = "s3cret <&>", **kw: Any) -> Onvif:
    secret = tmp_path / "onvif-password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)  # a secret file (edge.secret_files)
    fields: dict[str, Any] = {
        "url": cam_url,
        "username": "admin",
        "password_file": str(secret),
        "timeout_s": 2.0,
    }
    return Onvif(**{**fields, **kw})


def test_presets_listed_and_goto_reaches_the_camera(
    camera: FakeOnvifCamera, tmp_path: Path
) -> None:
    cfg = onvif(camera.url, tmp_path)
    assert get_presets(cfg) == [("1", "Gate"), ("2", "Car park"), ("3", "Door")]
    goto_preset(cfg, "2")
    assert camera.gotos == [("Profile_1", "2")]
    assert camera.security_seen == [True, True]


def test_wrong_password_is_an_auth_error(camera: FakeOnvifCamera, tmp_path: Path) -> None:
    with pytest.raises(OnvifError) as err:
        goto_preset(onvif(camera.url, tmp_path, password="guess"), "1")
    assert err.value.code == "auth"
    assert "password file" in str(err.value) and "clock" in str(err.value)
    assert camera.gotos == []


def test_unknown_preset_reports_the_camera_fault(camera: FakeOnvifCamera, tmp_path: Path) -> None:
    with pytest.raises(OnvifError) as err:
        goto_preset(onvif(camera.url, tmp_path), "9")
    assert err.value.code == "fault"
    assert "preset 9 does not exist" in str(err.value) and "NoToken" in str(err.value)


def test_unknown_profile_is_a_fault_naming_the_profile(
    camera: FakeOnvifCamera, tmp_path: Path
) -> None:
    with pytest.raises(OnvifError) as err:
        get_presets(onvif(camera.url, tmp_path, profile_token="Other"))
    assert err.value.code == "fault" and "profile Other" in str(err.value)


def test_unreachable_camera_fails_fast(tmp_path: Path) -> None:
    cfg = onvif(f"http://127.0.0.1:{free_port()}/onvif/ptz_service", tmp_path)
    started = time.monotonic()
    with pytest.raises(OnvifError) as err:
        goto_preset(cfg, "1")
    assert err.value.code == "unreachable" and "unreachable" in str(err.value)
    assert time.monotonic() - started < 2.0


def test_silent_camera_times_out(camera: FakeOnvifCamera, tmp_path: Path) -> None:
    camera.delay_s = 1.5
    started = time.monotonic()
    with pytest.raises(OnvifError) as err:
        goto_preset(onvif(camera.url, tmp_path, timeout_s=0.5), "1")
    assert err.value.code == "unreachable"
    assert time.monotonic() - started < 1.4


def test_preset_outside_the_allow_list_never_reaches_the_camera(
    camera: FakeOnvifCamera, tmp_path: Path
) -> None:
    cfg = onvif(camera.url, tmp_path, presets=["1", "3"])
    with pytest.raises(OnvifError) as err:
        goto_preset(cfg, "2")
    assert err.value.code == "not_allowed" and "allowed: 1, 3" in str(err.value)
    assert camera.requests == 0
    goto_preset(cfg, "3")
    assert camera.gotos == [("Profile_1", "3")]


def test_doctype_answer_is_refused_before_parsing(camera: FakeOnvifCamera, tmp_path: Path) -> None:
    camera.raw_response = (
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>' + envelope("&b;")
    )
    with pytest.raises(OnvifError) as err:
        get_presets(onvif(camera.url, tmp_path))
    assert err.value.code == "bad_response" and "DTD" in str(err.value)


def test_oversized_answer_is_refused(camera: FakeOnvifCamera, tmp_path: Path) -> None:
    camera.raw_response = envelope("<x>" + "a" * MAX_RESPONSE_BYTES + "</x>")
    with pytest.raises(OnvifError) as err:
        get_presets(onvif(camera.url, tmp_path))
    assert err.value.code == "bad_response" and "256 KB" in str(err.value)


def test_no_username_sends_no_security_header(tmp_path: Path) -> None:
    with FakeOnvifCamera(username="", password="") as cam:
        goto_preset(Onvif(url=cam.url, timeout_s=2.0), "1")
        assert cam.security_seen == [False] and cam.gotos == [("Profile_1", "1")]


def test_missing_password_file_names_the_file(camera: FakeOnvifCamera, tmp_path: Path) -> None:
    cfg = onvif(camera.url, tmp_path, password_file=str(tmp_path / "nope"))
    with pytest.raises(OnvifError) as err:
        goto_preset(cfg, "1")
    assert err.value.code == "config" and str(tmp_path / "nope") in str(err.value)
    assert camera.requests == 0
