"""DC-09 frames, payloads, replies and configuration, without a network."""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.config.dc09 import Dc09Config, load_key, partition_number, site_problems, zone_number
from edge.config.site import SiteConfig
from edge.events import Event, Kind
from edge.uplink.dc09_answer import Sent, check
from edge.uplink.dc09_crypto import Dc09Cipher
from edge.uplink.dc09_frame import (
    Header,
    ReplyError,
    body,
    crc16_arc,
    format_timestamp,
    frame,
    parse_reply,
    parse_timestamp,
    split_replies,
)
from edge.uplink.dc09_payload import (
    NULL_MESSAGE,
    NotTransmittable,
    Numbering,
    event_message,
    event_time_block,
)

GOLDEN = '"SIA-DCS"0001R0L0#1234[#1234|Nri1/BA001]_12:00:00,01-01-2025'
NOON = float(calendar.timegm((2025, 1, 1, 12, 0, 0, 0, 0, 0)))
STAMP = "_12:00:00,01-01-2025"
FIVE_S_BEFORE_NOON = "2025-01-01T11:59:55.250Z"
HEADER = Header("0", "0", "1234")
KEY16 = b"0123456789abcdef"


def site() -> SiteConfig:
    return SiteConfig.model_validate(
        {
            "site": {"id": "t-site"},
            "partitions": [{"id": "main"}, {"id": "annex"}],
            "zones": [
                {"id": "door", "type": "delayed", "input": {"kind": "gpio", "pin": 4}},
                {"id": "hall", "type": "instant", "input": {"kind": "gpio", "pin": 5}},
                {
                    "id": "shed",
                    "type": "tamper",
                    "partition": "annex",
                    "input": {"kind": "gpio", "pin": 6},
                },
            ],
        }
    )


def dc09(**kw: Any) -> Dc09Config:
    return Dc09Config.model_validate(
        {"account": "1234", "primary": {"host": "127.0.0.1", "port": 9000}, **kw}
    )


def message_for(event: Event, **kw: Any) -> str:
    cfg = dc09(**kw)
    return event_message(event, cfg, Numbering(cfg, site())).data


# --- frame -----------------------------------------------------------------------------


def test_golden_vector_crc_6372_and_length_003c() -> None:
    assert crc16_arc(GOLDEN.encode()) == 0x6372
    assert (
        frame(GOLDEN) == b'\n6372003C"SIA-DCS"0001R0L0#1234[#1234|Nri1/BA001]_12:00:00,01-01-2025\r'
    )


def test_golden_vector_built_from_an_event_carries_its_time_of_occurrence() -> None:
    event = Event(Kind.BURGLARY, zone_id="door", ts=FIVE_S_BEFORE_NOON)
    message = event_message(event, dc09(), Numbering(dc09(), site()))
    text = body(message.id, 1, HEADER, message.tail(format_timestamp(NOON)))
    assert text == GOLDEN.replace("]_", "][H11:59:55,01-01-2025]_")
    assert frame(text)[:9] == b"\nDCFA0052"  # the example of docs/dc09.md
    # A receiver clock 30 s ahead (learnt from its NAK) shifts both times alike.
    shifted = message.tail(format_timestamp(NOON + 30), offset_s=30)
    assert shifted == "#1234|Nri1/BA001][H12:00:25,01-01-2025]_12:00:30,01-01-2025"


def test_event_time_block_is_utc_and_left_out_when_the_time_is_unreadable() -> None:
    assert event_time_block(NOON) == "[H12:00:00,01-01-2025]"
    bad = Event(Kind.BURGLARY, zone_id="door", ts="yesterday")
    assert event_message(bad, dc09(), Numbering(dc09(), site())).occurred is None


def test_crc_is_crc16_arc_check_value() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D  # the catalogue check value of CRC-16/ARC
    assert crc16_arc(b"") == 0


def test_timestamp_round_trip_in_utc() -> None:
    assert format_timestamp(NOON) == STAMP
    assert parse_timestamp("]" + STAMP) == NOON
    assert parse_timestamp("]") is None
    assert parse_timestamp("]_25:00:00,01-01-2025") is None


def test_sequence_numbers_outside_0001_9999_are_refused() -> None:
    for seq in (0, 10_000):
        with pytest.raises(ValueError):
            body("NULL", seq, HEADER, "]" + STAMP)


def test_null_message_has_an_empty_data_block() -> None:
    text = body(NULL_MESSAGE.id, 42, HEADER, NULL_MESSAGE.tail(STAMP))
    assert text == '"NULL"0042R0L0#1234[]_12:00:00,01-01-2025'


def test_receiver_and_line_fields_are_always_present() -> None:
    text = body("NULL", 7, Header("1A", "3", "ABC123"), "]" + STAMP)
    assert text.startswith('"NULL"0007R1AL3#ABC123[')


def test_frame_refuses_a_body_the_length_field_cannot_hold() -> None:
    with pytest.raises(ValueError, match="at most"):
        frame("x" * 0x1000)


# --- payloads ------------------------------------------------------------------------------


def test_sia_dcs_payload_area_code_zone() -> None:
    assert message_for(Event(Kind.BURGLARY, zone_id="hall")) == "#1234|Nri1/BA002"
    assert message_for(Event(Kind.TAMPER_RESTORE, zone_id="shed")) == "#1234|Nri2/TR003"
    assert message_for(Event(Kind.MAINS_LOSS)) == "#1234|Nri0/AT000"
    assert message_for(Event(Kind.ARMED, partition="annex")) == "#1234|Nri2/CL000"


def test_adm_cid_payload_qualifier_event_group_zone() -> None:
    adm = {"protocol": "ADM-CID"}
    assert message_for(Event(Kind.BURGLARY, zone_id="door"), **adm) == "#1234|1130 01 001"
    assert message_for(Event(Kind.BURGLARY_RESTORE, zone_id="door"), **adm) == "#1234|3130 01 001"
    assert message_for(Event(Kind.TAMPER, zone_id="shed"), **adm) == "#1234|1137 02 003"
    assert message_for(Event(Kind.LOW_BATTERY), **adm) == "#1234|1302 00 000"


def test_pinned_numbers_win_over_positions() -> None:
    pins = {"zones": {"hall": 12}, "partitions": {"annex": 7}}
    assert message_for(Event(Kind.FIRE, zone_id="hall"), **pins) == "#1234|Nri1/FA012"
    assert message_for(Event(Kind.TAMPER, zone_id="shed"), **pins) == "#1234|Nri7/TA003"
    assert zone_number(site(), "hall", dc09(**pins)) == 12
    assert zone_number(site(), "door") == 1
    assert partition_number(site(), "annex", dc09(**pins)) == 7
    assert partition_number(site(), "annex") == 2
    with pytest.raises(LookupError, match="'nope'"):
        zone_number(site(), "nope")


def test_unknown_zone_is_sent_as_zone_zero() -> None:
    assert message_for(Event(Kind.BURGLARY, zone_id="removed")) == "#1234|Nri0/BA000"


def test_local_kinds_are_not_transmittable() -> None:
    with pytest.raises(NotTransmittable, match="exit_delay"):
        message_for(Event(Kind.EXIT_DELAY, partition="main"))


def test_verification_link_follows_the_data_block() -> None:
    cfg = dc09()
    url = "https://b.example/c?id=1"
    event = Event(Kind.BURGLARY, zone_id="door", details={"clip_url": url}, ts=FIVE_S_BEFORE_NOON)
    message = event_message(event, cfg, Numbering(cfg, site()))
    text = body(message.id, 1, HEADER, message.tail(STAMP))
    assert text.endswith(f"BA001][V{url}][H11:59:55,01-01-2025]_12:00:00,01-01-2025")
    # Contact ID: one extended block at most (pysiaalarm refuses two): the link wins.
    cid = dc09(protocol="ADM-CID")
    message = event_message(event, cid, Numbering(cid, site()))
    assert message.tail(STAMP) == f"#1234|1130 01 001][V{url}]_12:00:00,01-01-2025"
    plain = event_message(Event(Kind.BURGLARY, ts=FIVE_S_BEFORE_NOON), cid, Numbering(cid, site()))
    assert plain.tail(STAMP).endswith("000][H11:59:55,01-01-2025]_12:00:00,01-01-2025")
    odd = Event(Kind.BURGLARY, details={"clip_url": "http://h/a b[1]"})
    assert event_message(odd, cfg, Numbering(cfg, site())).extended == "[Vhttp://h/a%20b%5B1%5D]"
    long = Event(Kind.BURGLARY, details={"clip_url": "http://h/" + "x" * 300})
    assert event_message(long, cfg, Numbering(cfg, site())).extended == ""
    off = dc09(verification_links=False)
    assert event_message(event, off, Numbering(off, site())).extended == ""


# --- encryption ----------------------------------------------------------------------------


def test_encrypted_body_pads_before_the_bar_and_hides_everything_after_the_bracket() -> None:
    cipher = Dc09Cipher(KEY16)
    tail = "#1234|Nri1/BA001]" + STAMP
    text = body("SIA-DCS", 1, HEADER, tail, cipher)
    prefix = '"*SIA-DCS"0001R0L0#1234['
    assert text.startswith(prefix)
    hex_part = text[len(prefix) :]
    assert hex_part == hex_part.upper() and len(hex_part) % 32 == 0
    plain = cipher.open(hex_part)
    pad, bar, rest = plain.partition("|")
    assert bar == "|" and rest == tail
    assert 1 <= len(pad) <= 16 and pad.isalnum()
    assert body("SIA-DCS", 1, HEADER, tail, cipher) != text  # random pad: never the same bytes


@pytest.mark.parametrize("size", [16, 24, 32])
def test_cipher_accepts_aes_128_192_256(size: int) -> None:
    cipher = Dc09Cipher(bytes(range(size)))
    assert cipher.open(cipher.seal("]" + STAMP)).endswith("|]" + STAMP)
    assert "key" in repr(cipher) and "\\x00" not in repr(cipher)


def test_cipher_refuses_other_key_sizes() -> None:
    with pytest.raises(ValueError, match="16, 24 or 32"):
        Dc09Cipher(b"short")


# --- replies -------------------------------------------------------------------------------


def framed(text: str) -> str:
    return frame(text).decode().strip("\n\r")


def test_ack_reply_echoes_sequence_and_account() -> None:
    reply = parse_reply(framed('"ACK"0042R0L0#1234[]'))
    assert (reply.kind, reply.seq, reply.account, reply.timestamp) == ("ACK", 42, "1234", None)


def test_nak_reply_carries_the_receiver_clock_in_either_field_order() -> None:
    for fields in ("R0L0A0", "L0R0A0"):
        reply = parse_reply(framed(f'"NAK"0000{fields}[]{STAMP}'))
        assert (reply.kind, reply.timestamp) == ("NAK", NOON)


def test_duh_and_bare_replies() -> None:
    assert parse_reply(framed('"DUH"0003R0L0#1234[]')).kind == "DUH"
    bare = parse_reply('"NAK"')
    assert (bare.kind, bare.seq, bare.timestamp) == ("NAK", None, None)


def test_reply_with_a_bad_crc_or_length_is_not_trusted() -> None:
    good = framed('"ACK"0001R0L0#1234[]')
    with pytest.raises(ReplyError, match="CRC"):
        parse_reply("0000" + good[4:])
    with pytest.raises(ReplyError, match="length"):
        parse_reply(good[:4] + "0099" + good[8:])
    with pytest.raises(ReplyError, match="empty"):
        parse_reply("")
    with pytest.raises(ReplyError):
        parse_reply("hello")


def test_encrypted_ack_must_decrypt_with_our_key() -> None:
    ours = Dc09Cipher(KEY16)
    line = framed('"*ACK"0005R0L0#1234[' + ours.seal("]" + STAMP))
    reply = parse_reply(line, ours)
    assert (reply.kind, reply.seq, reply.encrypted, reply.timestamp) == ("ACK", 5, True, NOON)
    with pytest.raises(ReplyError, match="another key"):
        parse_reply(line, Dc09Cipher(b"fedcba9876543210"))
    with pytest.raises(ReplyError, match="no AES key"):
        parse_reply(line)


def test_ack_names_receiver_and_line_and_each_field_only_once() -> None:
    reply = parse_reply(framed('"ACK"0042R1AL3#1234[]'))
    assert (reply.receiver, reply.line, reply.account) == ("1A", "3", "1234")
    assert parse_reply(framed('"ACK"0042#1234[]')).receiver is None
    with pytest.raises(ReplyError, match="# field twice"):
        parse_reply(framed('"ACK"0042R0L0#1234#9999[]'))


def test_answer_must_echo_our_sequence_account_receiver_and_line() -> None:
    sent = Sent(42, Header("1A", "3", "1234"), encrypted=False)
    assert check(parse_reply(framed('"ACK"0042R01AL03#1234[]')), sent, NOON) is None
    assert check(parse_reply(framed('"ACK"0042#1234[]')), sent, NOON) is None  # R, L optional
    for text, why in [
        ('"ACK"0042R1BL3#1234[]', "receiver 1B"),
        ('"ACK"0042R1AL4#1234[]', "line 4"),
        ('"ACK"0042R1AL3#1235[]', "account 1235"),
        ('"ACK"0042R1AL3[]', "without an account"),
        ('"ACK"0043R1AL3#1234[]', "message 0043"),
    ]:
        with pytest.raises(ReplyError, match=why):
            check(parse_reply(framed(text)), sent, NOON)
    with pytest.raises(ReplyError, match="bare"):
        check(parse_reply('"ACK"'), sent, NOON)
    assert check(parse_reply('"NAK"'), sent, NOON) is None  # a NAK is never a delivery


def test_answer_timestamp_window_is_minus_40_plus_20_seconds() -> None:
    sent = Sent(5, HEADER, encrypted=True)
    ours = Dc09Cipher(KEY16)
    for drift, ok in [(-40, True), (20, True), (-41, False), (21, False)]:
        line = framed('"*ACK"0005R0L0#1234[' + ours.seal("]" + format_timestamp(NOON + drift)))
        reply = parse_reply(line, ours)
        if ok:
            check(reply, sent, NOON)
        else:
            with pytest.raises(ReplyError, match="outside"):
                check(reply, sent, NOON)
    plain = parse_reply(framed('"ACK"0005R0L0#1234[]'))
    with pytest.raises(ReplyError, match="unencrypted ACK"):
        check(plain, sent, NOON)


def test_split_replies_keeps_partial_frames_for_the_next_read() -> None:
    one, two = frame('"ACK"0001R0L0#1234[]'), frame('"ACK"0002R0L0#1234[]')
    lines, rest = split_replies(one + two[:5])
    assert [parse_reply(x).seq for x in lines] == [1] and rest == two[:5]
    lines, rest = split_replies(rest + two[5:])
    assert [parse_reply(x).seq for x in lines] == [2] and rest == b""
    assert split_replies(b'"NAK"') == (['"NAK"'], b"")
    assert split_replies(b"\n\r") == ([""], b"")


# --- configuration -------------------------------------------------------------------------


def errors(**kw: Any) -> str:
    with pytest.raises(ValidationError) as info:
        dc09(**kw)
    return str(info.value)


def test_config_normalises_and_bounds() -> None:
    cfg = dc09(account="abc123", receiver="1a", line="f")
    assert (cfg.account, cfg.receiver, cfg.line) == ("ABC123", "1A", "F")
    assert "account" in errors(account="12")
    assert "account" in errors(account="12345G")
    assert "poll_interval_s" in errors(poll_interval_s=5)
    assert "colour" in errors(colour="red")
    assert "same receiver as primary" in errors(secondary={"host": "127.0.0.1", "port": 9000})


def test_zone_numbers_are_checked() -> None:
    assert "numbers go from 1 to 999" in errors(zones={"door": 1000})
    assert "numbers go from 1 to 99" in errors(partitions={"main": 100})
    assert "must be unique" in errors(zones={"door": 5, "hall": 5})
    assert "not an id" in errors(zones={"Door": 5})


def test_site_problems_name_unknown_ids_and_collisions_with_positions() -> None:
    problems = site_problems(dc09(zones={"cellar": 4, "shed": 1}), site())
    assert any("'cellar' is not a zone" in p for p in problems)
    assert any("number 1 is given to 'door' and 'shed'" in p for p in problems)
    assert site_problems(dc09(zones={"shed": 9}), site()) == []


def write_key(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "dc09.key"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return str(path)


def test_hex_key_file_loads_at_validation_and_errors_never_show_it(tmp_path: Path) -> None:
    key = "00112233445566778899AABBCCDDEEFF"
    cfg = dc09(key_file=write_key(tmp_path, key))
    assert cfg.encrypted and load_key(cfg) == bytes.fromhex(key)
    assert key not in repr(cfg) and key not in str(cfg.model_dump())
    bad = "00112233445566778899AABBCCDDEE"
    message = errors(key_file=write_key(tmp_path, bad))
    assert "32, 48 or 64 hex digits" in message and bad not in message


def test_ascii_key_file_and_permissions(tmp_path: Path) -> None:
    cfg = dc09(key_file=write_key(tmp_path, "0123456789ABCDEF"), key_format="ascii")
    assert load_key(cfg) == b"0123456789ABCDEF"
    assert "chmod 600" in errors(key_file=write_key(tmp_path, "0123456789ABCDEF", 0o644))
    assert "does not exist" in errors(key_file=str(tmp_path / "missing.key"))
    relative = Dc09Config.model_construct(key_file="dc09.key")
    assert str(relative.key_path()) == "/etc/edge/secrets/dc09.key"


def test_timestamp_uses_utc_whatever_the_local_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Pacific/Auckland")
    time.tzset()
    try:
        assert format_timestamp(NOON) == STAMP
    finally:
        monkeypatch.undo()
        time.tzset()


def test_docs_list_every_transmitted_kind_with_its_codes() -> None:
    text = (Path(__file__).resolve().parents[1] / "docs" / "dc09.md").read_text()
    for kind in Kind:
        spec = kind.spec
        if spec.sia is None or spec.cid is None:
            continue
        row = f"| `{kind.value}` | {spec.label} | `{spec.sia}` | `{spec.qualifier}{spec.cid:03d}` |"
        assert row in text, f"docs/dc09.md: update the row of {kind.value}"
