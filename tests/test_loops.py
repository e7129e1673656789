"""Supervised loop bands: exact edges, hysteresis, faults between bands, divider round trip."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.config import parse_config
from edge.loops import LoopModel, LoopState, ohms_from_volts, volts_from_ohms

N, A = LoopState.NORMAL, LoopState.ALARM
TS, TC, F = LoopState.TAMPER_SHORT, LoopState.TAMPER_CUT, LoopState.FAULT


def model_from_toml(wiring: str, contact: str) -> LoopModel:
    """The model as an installer's site.toml produces it (default resistor values)."""
    cfg = parse_config(
        f"""
[site]
id = "loops"

[[zones]]
id = "z"
type = "instant"
input = {{ kind = "adc", channel = 0, wiring = "{wiring}", contact = "{contact}" }}
"""
    )
    spec = cfg.zones[0].input
    assert spec.kind == "adc"
    return spec.model()


def up(x: float) -> float:
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    return math.nextafter(x, -math.inf)


# (wiring, contact) -> states of the bands in increasing resistance.
LAYOUTS = {
    ("seol", "nc"): [TS, N, A],
    ("seol", "no"): [A, N, TC],
    ("deol", "nc"): [TS, N, A, TC],
    ("deol", "no"): [TS, N, A, TC],  # DEOL ignores the contact type
}


@pytest.mark.parametrize("layout", list(LAYOUTS), ids="-".join)
def test_band_layout_follows_wiring(layout: tuple[str, str]) -> None:
    model = model_from_toml(*layout)
    assert [b.state for b in model.bands] == LAYOUTS[layout]


def test_default_deol_band_values() -> None:
    """4k7 + 4k7 at 10 %: the numbers an installer checks with a multimeter."""
    bands = model_from_toml("deol", "nc").bands
    assert [(round(b.low, 6), round(b.high, 6)) for b in bands] == [
        (0.0, 423.0),
        (4230.0, 5170.0),
        (8460.0, 10340.0),
        (41360.0, math.inf),
    ]


@pytest.mark.parametrize("layout", list(LAYOUTS), ids="-".join)
def test_edges_are_inclusive_and_just_beyond_is_fault(layout: tuple[str, str]) -> None:
    model = model_from_toml(*layout)
    for band in model.bands:
        assert model.classify(band.low) is band.state
        assert model.classify(band.high) is band.state
        if band.low > 0:
            assert model.classify(down(band.low)) is F
        if not math.isinf(band.high):
            assert model.classify(up(band.high)) is F


@pytest.mark.parametrize("layout", list(LAYOUTS), ids="-".join)
def test_between_bands_is_fault(layout: tuple[str, str]) -> None:
    model = model_from_toml(*layout)
    bands = model.bands
    for lower, upper in itertools.pairwise(bands):
        middle = (lower.high + upper.low) / 2
        assert model.classify(middle) is F
        assert model.classify(middle, lower.state) is F
        assert model.classify(middle, upper.state) is F


def test_extremes() -> None:
    assert model_from_toml("seol", "nc").classify(0.0) is TS
    assert model_from_toml("seol", "nc").classify(math.inf) is A
    assert model_from_toml("seol", "no").classify(0.0) is A
    assert model_from_toml("seol", "no").classify(math.inf) is TC
    assert model_from_toml("deol", "nc").classify(0.0) is TS
    assert model_from_toml("deol", "nc").classify(math.inf) is TC
    assert model_from_toml("deol", "nc").classify(math.nan) is F


@pytest.mark.parametrize("layout", list(LAYOUTS), ids="-".join)
def test_hysteresis_keeps_the_current_state_within_the_widened_band(
    layout: tuple[str, str],
) -> None:
    model = model_from_toml(*layout)
    h = model.hysteresis
    assert h == 0.02
    for band in model.bands:
        top = band.high * (1 + h)
        bottom = band.low * (1 - h)
        if not math.isinf(band.high):
            # Sticky up to the widened edge, but only for the state we are in.
            assert model.classify(top, band.state) is band.state
            assert model.classify(top) is F
            assert model.classify(up(top), band.state) is F
        if band.low > 0:
            assert model.classify(bottom, band.state) is band.state
            assert model.classify(bottom) is F
            assert model.classify(down(bottom), band.state) is F


def test_hysteresis_does_not_extend_to_other_states_or_fault() -> None:
    model = model_from_toml("deol", "nc")
    normal = model.bands[1]
    just_above = normal.high * 1.01
    assert model.classify(just_above, N) is N
    assert model.classify(just_above, A) is F  # another state's margin does not apply
    assert model.classify(just_above, F) is F  # a fault has no band to widen
    assert model.classify(4700.0, F) is N  # and recovers as soon as a band matches


@pytest.mark.parametrize("vref,pullup", [(3.3, 4700.0), (5.0, 10_000.0), (1.0, 100.0)])
def test_divider_fixed_points(vref: float, pullup: float) -> None:
    assert volts_from_ohms(0.0, vref, pullup) == 0.0
    assert volts_from_ohms(math.inf, vref, pullup) == vref
    assert volts_from_ohms(pullup, vref, pullup) == pytest.approx(vref / 2)
    assert ohms_from_volts(0.0, vref, pullup) == 0.0
    assert ohms_from_volts(-0.01, vref, pullup) == 0.0
    assert ohms_from_volts(vref, vref, pullup) == math.inf
    assert ohms_from_volts(vref + 0.1, vref, pullup) == math.inf
    assert ohms_from_volts(vref / 2, vref, pullup) == pytest.approx(pullup)


@given(
    ohms=st.floats(min_value=0.0, max_value=1e7),
    vref=st.floats(min_value=1.0, max_value=5.5),
    pullup=st.floats(min_value=100.0, max_value=100_000.0),
)
def test_round_trip_ohms_volts_ohms(ohms: float, vref: float, pullup: float) -> None:
    volts = volts_from_ohms(ohms, vref, pullup)
    assert 0.0 <= volts <= vref
    back = ohms_from_volts(volts, vref, pullup)
    if volts < vref:  # a huge resistance can round to the reference: that reads as open
        assert back == pytest.approx(ohms, rel=1e-6, abs=1e-6)
    else:
        assert back == math.inf


@given(
    frac=st.floats(min_value=0.0, max_value=0.999),
    vref=st.floats(min_value=1.0, max_value=5.5),
    pullup=st.floats(min_value=100.0, max_value=100_000.0),
)
def test_round_trip_volts_ohms_volts(frac: float, vref: float, pullup: float) -> None:
    volts = frac * vref
    assert volts_from_ohms(ohms_from_volts(volts, vref, pullup), vref, pullup) == pytest.approx(
        volts, rel=1e-9, abs=1e-12
    )
