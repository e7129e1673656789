"""Site configuration: what an installer sees for good and bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import load_config, parse_config
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BASE = '[site]\nid = "t-site"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "site.toml")
    return info.value.problems


def test_demo_site_is_valid_and_paths_resolve_against_the_file() -> None:
    cfg = load_config(REPO / "hw-sim/sites/demo.toml")
    assert cfg.hardware.backend == "sim"
    assert Path(cfg.paths.data_dir) == REPO / ".demo" / "data"
    assert {z.type for z in cfg.zones} >= {"delayed", "instant", "fire", "box_tamper"}


def test_unknown_key_names_line_key_and_fix() -> None:
    text = (
        BASE + '\n[[zones]]\nid = "door"\ntype = "instant"\ncolour = "red"\n'
        'input = { kind = "gpio", pin = 4 }\n'
    )
    (msg,) = problems(text)
    assert msg.startswith("site.toml:7: zones[0](id='door').colour: Extra inputs")
    assert "remove it or check its spelling" in msg


def test_every_field_error_is_listed_at_once() -> None:
    text = BASE + (
        '\n[[zones]]\nid = "a"\ntype = "delayed"\nentry_delay_s = 50\n'
        'input = { kind = "gpio", pin = 4 }\n'
        '\n[[zones]]\nid = "b"\ntype = "instant"\ninput = { kind = "adc", channel = 8 }\n'
    )
    found = problems(text)
    assert len(found) == 2
    assert any("entry_delay_s" in p and "45" in p and p.startswith("site.toml:7:") for p in found)
    assert any("input.channel" in p and "7" in p and p.startswith("site.toml:13:") for p in found)


def test_pin_used_twice_points_at_the_second_user() -> None:
    text = BASE + (
        '\n[[zones]]\nid = "a"\ntype = "instant"\ninput = { kind = "gpio", pin = 4 }\n'
        '\n[[outputs]]\nid = "siren"\npin = 4\n'
    )
    (msg,) = problems(text)
    assert msg == (
        "site.toml:10: GPIO 4 is used by zone 'a' and output 'siren': give each its own pin"
    )


def test_adc_zone_reserves_the_spi_pins() -> None:
    text = BASE + (
        '\n[[zones]]\nid = "a"\ntype = "instant"\ninput = { kind = "adc", channel = 0 }\n'
        '\n[[zones]]\nid = "b"\ntype = "instant"\ninput = { kind = "gpio", pin = 10 }\n'
    )
    (msg,) = problems(text)
    assert "GPIO 10 is used by zone 'b' and the ADC (SPI)" in msg


def test_overlapping_resistor_bands_are_refused_with_values() -> None:
    text = BASE + (
        '\n[[zones]]\nid = "a"\ntype = "instant"\n'
        'input = { kind = "adc", channel = 0, eol_ohms = 4700, alarm_ohms = 470 }\n'
    )
    (msg,) = problems(text)
    assert "bands overlap" in msg and "5170" in msg and "4653" in msg


def test_references_and_duplicates() -> None:
    text = BASE + (
        '\n[[zones]]\nid = "a"\ntype = "instant"\npartition = "annex"\n'
        'input = { kind = "gpio", pin = 4 }\n'
        '\n[[zones]]\nid = "a"\ntype = "instant"\ninput = { kind = "gpio", pin = 5 }\n'
        '\n[siren]\noutput = "nope"\n'
    )
    found = problems(text)
    assert any("partition 'annex', which is not defined" in p for p in found)
    assert any("id 'a' appears 2 times" in p for p in found)
    assert any(p.startswith("site.toml:16: siren.output 'nope'") for p in found)


def test_pulse_longer_than_max_on_time_is_refused() -> None:
    text = (
        BASE + '\n[[outputs]]\nid = "gate"\npin = 6\nmode = "pulsed"\npulse_s = 30\nmax_on_s = 10\n'
    )
    (msg,) = problems(text)
    assert "pulse_s (30 s) is longer than max_on_s (10 s)" in msg


def test_box_bus_must_stay_local() -> None:
    (msg,) = problems(BASE + '\n[bus]\nurl = "mqtt://10.0.0.5:1883"\n')
    assert "loopback" in msg


def test_toml_syntax_error_and_missing_file(tmp_path: Path) -> None:
    (msg,) = problems(BASE + "[zones\n")
    assert "TOML syntax error" in msg and "line 3" in msg
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml")
    assert "file not found" in str(info.value)
