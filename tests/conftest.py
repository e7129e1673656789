"""Shared fixtures. Helpers live in ``tests/support`` and are imported as ``support.<module>``:
this directory is put on sys.path here (tests/ is not a package, and benches import the same
helpers), so it works in every pytest import mode."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from support.broker import MOSQUITTO, Broker, start_mosquitto


def _mosquitto(workdir: Path, *, unix: bool) -> Iterator[Broker]:
    if not MOSQUITTO.exists():
        pytest.skip(f"{MOSQUITTO} is not installed (apt-get install mosquitto)")
    broker = start_mosquitto(workdir, unix=unix)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a free loopback port, stopped at teardown."""
    yield from _mosquitto(tmp_path / "broker", unix=False)


@pytest.fixture
def unix_broker(tmp_path: Path) -> Iterator[Broker]:
    """A real mosquitto on a unix socket, stopped at teardown."""
    yield from _mosquitto(tmp_path / "ubroker", unix=True)


@pytest.fixture(autouse=True)
def _nothing_written_to_etc_edge() -> Iterator[None]:
    """A test works in its own directories: the box's /etc/edge must not appear because of it."""
    existed = Path("/etc/edge").exists()
    yield
    if not existed:
        assert not Path("/etc/edge").exists(), "the test wrote into /etc/edge"
