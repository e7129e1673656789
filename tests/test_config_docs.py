"""docs/configuration.md says what the code enforces, and its examples behave as shown."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

import pytest
from pydantic import BaseModel

from edge.commands.config import run_check
from edge.config import models as m
from edge.config import parse_config
from edge.config.docs import TECHNICAL_KINDS, ZONE_TYPES, examples, main, render_markdown
from edge.config.load import DEFAULT_PATH
from edge.config.site import SiteConfig
from edge.errors import EX_CONFIG, ConfigError

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
MODELS: list[type[BaseModel]] = [
    SiteConfig,
    m.SiteInfo,
    m.Paths,
    m.Bus,
    m.Hardware,
    m.Adc,
    m.Journal,
    m.Partition,
    m.Schedule,
    m.Zone,
    m.GpioInput,
    m.AdcInput,
    m.Output,
    m.SirenRule,
]


@pytest.fixture(scope="module")
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def test_doc_is_up_to_date(doc: str) -> None:
    assert render_markdown(doc) == doc, (
        "docs/configuration.md is stale: run .venv/bin/python -m edge.config.docs "
        "docs/configuration.md"
    )


def test_every_key_and_bound_is_documented(doc: str) -> None:
    for model in MODELS:
        for name in model.model_fields:
            assert f"| `{name}` |" in doc, f"{model.__name__}.{name} missing"
    assert "| `pin` | integer | **required** | ≥ 0, ≤ 27 |" in doc
    assert "| `entry_delay_s` | integer | `30` | ≥ 0, ≤ 45 |" in doc
    assert "| `max_on_s` | number | `900` | ≥ 1, ≤ 86400 |" in doc


def test_every_zone_type_is_explained() -> None:
    assert set(ZONE_TYPES) == set(get_args(m.ZoneType))
    technical = m.Zone.model_fields["technical"].annotation
    assert set(TECHNICAL_KINDS) == set(get_args(technical))


def test_rendering_is_stable_and_fills_empty_blocks(doc: str) -> None:
    """Emptying a generated block and rendering restores it; rendering twice changes nothing."""
    start = doc.index("<!-- generated:loop-bands -->\n") + len("<!-- generated:loop-bands -->\n")
    end = doc.index("<!-- /generated:loop-bands -->")
    emptied = doc[:start] + doc[end:]
    assert render_markdown(emptied) == doc
    assert render_markdown(render_markdown(doc)) == render_markdown(doc)


def test_missing_block_is_an_error(doc: str) -> None:
    broken = doc.replace("<!-- generated:loop-bands -->", "").replace(
        "<!-- /generated:loop-bands -->", ""
    )
    with pytest.raises(ValueError, match="loop-bands"):
        render_markdown(broken)


def test_complete_example_is_valid_and_covers_the_brief(doc: str) -> None:
    cfg = parse_config(examples(doc)["site"], DEFAULT_PATH)
    assert len(cfg.partitions) == 2
    zones = {z.type: z for z in cfg.zones}
    assert zones["delayed"].input.kind == "gpio"
    pir = zones["instant"].input
    assert pir.kind == "adc" and pir.wiring == "deol"
    assert {"fire", "technical", "box_tamper", "keyswitch"} <= set(zones)
    assert zones["technical"].technical == "flood"
    modes = {o.id: o.mode for o in cfg.outputs}
    assert cfg.siren is not None and modes[cfg.siren.output] == "latched"
    assert "pulsed" in modes.values()


def test_bad_example_fails_as_documented(doc: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(examples(doc)["bad-site"], DEFAULT_PATH)
    assert len(info.value.problems) == 3
    assert str(info.value) in doc


def test_cli_prints_what_the_doc_shows(
    doc: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run the real `edge config check` code on both examples and find its output in the doc."""
    good, bad = tmp_path / "site.toml", tmp_path / "bad.toml"
    good.write_text(examples(doc)["site"], encoding="utf-8")
    bad.write_text(examples(doc)["bad-site"], encoding="utf-8")

    assert run_check(argparse.Namespace(file=str(good), config=None)) == 0
    out = capsys.readouterr().out.strip()
    assert out.replace(str(good), DEFAULT_PATH) in doc

    assert run_check(argparse.Namespace(file=str(bad), config=None)) == EX_CONFIG
    err = capsys.readouterr().err.strip()
    assert err.replace(str(bad), DEFAULT_PATH) in doc


def test_loop_table_matches_the_model(doc: str) -> None:
    # 4.7 kΩ nominal against a 4.7 kΩ pull-up is half the reference: 1.650 V.
    assert "Normal is nominally 4700 Ω, 1.650 V; alarm 9400 Ω, 2.200 V" in doc
    assert "| **normal** | 4230 – 5170 | 1.563 – 1.729 |" in doc


def test_main_check_mode(tmp_path: Path, doc: str) -> None:
    copy = tmp_path / "configuration.md"
    copy.write_text(doc.replace("| **normal** |", "| **NORMAL** |"), encoding="utf-8")
    assert main(["--check", str(copy)]) == 1
    assert main([str(copy)]) == 0
    assert copy.read_text(encoding="utf-8") == doc
    assert main(["--check", str(copy)]) == 0
