"""Keep docs/configuration.md equal to what the configuration models enforce.

Installers trust the reference only if it is exactly what `edge config check` applies. The
prose of docs/configuration.md is written by hand; the parts that could drift are generated
from the code between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->`` markers:
the key tables (type, default, bounds, description), the zone types and their codes, the
worked loop example (computed by the real LoopModel) and the output of `edge config check`
for the hand-written examples between ``<!-- example:NAME -->`` markers.
tests/test_config_docs.py fails when the committed file is stale. Regenerate with::

    .venv/bin/python -m edge.config.docs docs/configuration.md
"""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edge.config.load import DEFAULT_PATH, parse_config
from edge.config.models import ID_PATTERN
from edge.config.site import SiteConfig
from edge.errors import ConfigError
from edge.events import Kind
from edge.loops import OPEN_MULTIPLE, SHORT_FRACTION, LoopModel, volts_from_ohms

_PATTERN_WORDS = {
    ID_PATTERN: "lowercase letters, digits, `-`, `_`; 1–32 characters, first a letter or digit",
    r"^[a-z0-9][a-z0-9-]{1,62}$": "lowercase letters, digits and `-`; 2–63 characters",
    r"^([01]\d|2[0-3]):[0-5]\d$": "`HH:MM`, 24-hour clock",
}


ZONE_TYPES: dict[str, tuple[str, Kind | None]] = {
    "instant": ("Intrusion: alarm at once while its partition is armed.", Kind.BURGLARY),
    "delayed": (
        "Intrusion on the entry route: while armed it starts the entry delay, and raises "
        "the alarm if nobody disarms in time.",
        Kind.BURGLARY,
    ),
    "tamper": ("24 h: tamper loop of a detector, siren or cable.", Kind.TAMPER),
    "panic": ("24 h: panic button.", Kind.PANIC),
    "holdup": ("24 h: hold-up button.", Kind.HOLDUP),
    "fire": (
        "24 h: fire loop; its loop faults are reported as fire loop faults "
        f"({Kind.FIRE_LOOP_FAULT.spec.sia} / {Kind.FIRE_LOOP_FAULT.spec.cid}).",
        Kind.FIRE,
    ),
    "technical": ("24 h: technical alarm; `technical` chooses the codes (below).", None),
    "box_tamper": ("24 h: tamper switch of the site box's own enclosure.", Kind.TAMPER),
    "keyswitch": ("Arms and disarms its partition; raises no alarm of its own.", None),
}
TECHNICAL_KINDS: dict[str, Kind] = {
    "flood": Kind.FLOOD,
    "freezer": Kind.FREEZER,
    "mains": Kind.MAINS_LOSS,
    "battery": Kind.LOW_BATTERY,
    "other": Kind.TECHNICAL,
}
_NO_CODES = {
    "technical": "see below",
    "keyswitch": f"{Kind.ARMED.spec.sia} / {Kind.ARMED.spec.cid} armed, "
    f"{Kind.DISARMED.spec.sia} / {Kind.DISARMED.spec.cid} disarmed",
}

_BLOCK = re.compile(r"(<!-- (generated|example):([\w-]+) -->\n)(.*?)(<!-- /\2:\3 -->)", re.S)


def render_markdown(template: str) -> str:
    """``template`` (docs/configuration.md) with every generated block recomputed."""
    given = examples(template)
    makers: dict[str, Callable[[], str]] = {
        "reference": lambda: "\n\n".join([_overview(), *_sections(), _zone_types()]),
        "loop-bands": _loops,
        "check-ok": lambda: _console(_ok_output(given["site"])),
        "check-errors": lambda: _console(_error_output(given["bad-site"])),
    }
    names = {m.group(3) for m in _BLOCK.finditer(template) if m.group(2) == "generated"}
    missing = sorted((set(makers) - names) | ({"site", "bad-site"} - set(given)))
    unknown = sorted(names - set(makers))
    if missing or unknown:
        raise ValueError(
            f"docs template: missing block(s) {missing or 'none'}, unknown generated "
            f"block(s) {unknown or 'none'} (known: {', '.join(makers)})"
        )

    def replace(m: re.Match[str]) -> str:
        if m.group(2) == "example":
            return m.group(0)
        return m.group(1) + makers[m.group(3)]().strip("\n") + "\n" + m.group(5)

    return _BLOCK.sub(replace, template)


def examples(template: str) -> dict[str, str]:
    """The hand-written TOML examples of the template, by name (tests validate them)."""
    found = _BLOCK.finditer(template)
    return {m.group(3): _fenced(m.group(4)) for m in found if m.group(2) == "example"}


def _fenced(block: str) -> str:
    """Content of the first fenced code block in ``block`` (or the block itself)."""
    m = re.search(r"```[\w-]*\n(.*?)```", block, re.S)
    return m.group(1) if m else block


# -- reference tables ---------------------------------------------------------------------


def _overview() -> str:
    rows = ["## Sections", "", "| section | form | description |", "|---|---|---|"]
    for name, field in SiteConfig.model_fields.items():
        form = f"`[[{name}]]` (repeated)" if _is_list(field.annotation) else f"`[{name}]`"
        need = "required" if field.is_required() else "optional"
        rows.append(f"| `{name}` | {form}, {need} | {_cell(field.description)} |")
    return "\n".join(rows)


def _sections() -> list[str]:
    """One table per model reachable from SiteConfig, depth first, in field order."""
    out: list[str] = []

    def walk(model: type[BaseModel], title: str, prefix: str) -> None:
        out.append(_table(model, title))
        for name, field in model.model_fields.items():
            subs = _models(field.annotation)
            key = f"{prefix}.{name}" if prefix else name
            for sub in subs:
                if len(subs) > 1:  # a union told apart by its `kind`
                    kind = sub.model_fields["kind"].default
                    walk(sub, f'`{key}` with `kind = "{kind}"`', key)
                elif _is_list(field.annotation):
                    walk(sub, f"`[[{key}]]`", key)
                else:
                    walk(sub, f"`[{key}]`", key)

    for name, field in SiteConfig.model_fields.items():
        sub = _models(field.annotation)[0]
        walk(sub, f"`[[{name}]]`" if _is_list(field.annotation) else f"`[{name}]`", name)
    out[0] = "## Reference\n\n" + out[0]
    return out


def _table(model: type[BaseModel], title: str) -> str:
    rows = [f"### {title}", "", "| key | type | default | bounds | description |"]
    rows.append("|---|---|---|---|---|")
    for name, field in model.model_fields.items():
        cells = [f"`{name}`", _type(field.annotation), _default(field), _bounds(field)]
        text = field.description
        if text is None and get_origin(field.annotation) is Literal:
            text = "Selects this variant."
        rows.append("| " + " | ".join(_cell(c) for c in [*cells, text]) + " |")
    return "\n".join(rows)


def _cell(text: str | None) -> str:
    escaped = (text or "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    return escaped.replace("\n", " ")


def _models(ann: Any) -> list[type[BaseModel]]:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for arg in get_args(ann) for m in _models(arg)]


def _is_list(ann: Any) -> bool:
    return get_origin(ann) is list


def _type(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if ann in simple:
        return simple[ann]
    if origin is Literal:
        return " or ".join(f'`"{a}"`' for a in args)
    if origin is list:
        inner = args[0]
        if _models(inner):
            return "array of tables"
        return f"list of {_type(inner)}"
    if origin in (Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        if len(real) > 1 and all(_models(a) for a in real):
            return "inline table, one of the variants below"
        text = _type(real[0])
        return f"{text} (optional)" if len(real) < len(args) else text
    if _models(ann):
        return "table"
    return str(ann)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, BaseModel):
        return _toml(value.model_dump(exclude_defaults=True))
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(all defaults)"
        return f"`{_toml(value)}`"
    if field.default is None:
        return "unset"
    return f"`{_toml(field.default)}`"


def _bounds(field: FieldInfo) -> str:
    found: list[str] = []
    is_list = _is_list(field.annotation)
    for meta in field.metadata:
        if isinstance(meta, Ge):
            found.append(f"≥ {_toml(meta.ge)}")
        elif isinstance(meta, Gt):
            found.append(f"> {_toml(meta.gt)}")
        elif isinstance(meta, Le):
            found.append(f"≤ {_toml(meta.le)}")
        elif isinstance(meta, Lt):
            found.append(f"< {_toml(meta.lt)}")
        elif isinstance(meta, MinLen):
            found.append(f"at least {_count(meta.min_length, is_list)}")
        elif isinstance(meta, MaxLen):
            found.append(f"at most {_count(meta.max_length, is_list)}")
        elif getattr(meta, "pattern", None):
            found.append(_PATTERN_WORDS.get(meta.pattern, f"pattern `{meta.pattern}`"))
    return ", ".join(found)


def _count(n: int, is_list: bool) -> str:
    if is_list:
        return f"{n} entry" if n == 1 else f"{n} entries"
    return f"{n} character" if n == 1 else f"{n} characters"


def _zone_types() -> str:
    rows = ["### Zone types", "", "| type | behaviour | event codes (SIA / CID) |"]
    rows.append("|---|---|---|")
    for name, (text, kind) in ZONE_TYPES.items():
        codes = f"{kind.spec.sia} / {kind.spec.cid}" if kind else _NO_CODES[name]
        rows.append(f"| `{name}` | {text} | {codes} |")
    rows += ["", "A `technical` zone's `technical` key chooses its codes:", ""]
    rows += ["| technical | event codes (SIA / CID) |", "|---|---|"]
    for name, kind in TECHNICAL_KINDS.items():
        rows.append(f"| `{name}` | {kind.spec.sia} / {kind.spec.cid} ({kind.spec.label}) |")
    return "\n".join(rows)


# -- loop bands, check output ----------------------------------------------------------------


def _loops() -> str:
    """Worked example for the usual 4.7 kΩ / 4.7 kΩ DEOL loop, computed by the real model."""
    vref, pullup, eol, alarm, tol, hyst = 3.3, 4700.0, 4700.0, 4700.0, 0.10, 0.02
    model = LoopModel("deol", "nc", eol, alarm, tol, hyst)
    lead = (
        f"**Worked example**: a DEOL loop with `eol_ohms = {eol:g}` and `alarm_ohms = {alarm:g}`, "
        f"`tolerance = {tol:g}` and `hysteresis = {hyst:g}` (the defaults), read through a "
        f"{pullup:g} Ω pull-up at `vref = {vref:g}`. Normal is nominally {eol:g} Ω, "
        f"{volts_from_ohms(eol, vref, pullup):.3f} V; alarm {eol + alarm:g} Ω, "
        f"{volts_from_ohms(eol + alarm, vref, pullup):.3f} V. A short is anything below "
        f"{SHORT_FRACTION:.0%} of the lowest band's low edge, a cut anything above "
        f"{OPEN_MULTIPLE:g} × the highest band's high edge:"
    )
    rows = ["| reading | loop resistance (Ω) | voltage at the ADC input (V) |", "|---|---|---|"]
    previous = None
    for band in model.bands:
        if previous is not None:
            rows.append(_band_row("fault", previous, band.low, vref, pullup))
        rows.append(_band_row(f"**{band.state.value}**", band.low, band.high, vref, pullup))
        previous = band.high
    normal = model.bands[1]
    low, high = normal.low * (1 - hyst), normal.high * (1 + hyst)
    sticky = (
        f"With the hysteresis, a loop that is already *normal* stays normal from "
        f"{low:.0f} Ω to {high:.0f} Ω ({volts_from_ohms(low, vref, pullup):.3f} V to "
        f"{volts_from_ohms(high, vref, pullup):.3f} V), so a reading sitting on a band edge "
        f"does not chatter between normal and fault."
    )
    return "\n\n".join([lead, "\n".join(rows), sticky])


def _band_row(label: str, low: float, high: float, vref: float, pullup: float) -> str:
    def ohms(r: float) -> str:
        return "∞" if r == float("inf") else f"{r:.0f}"

    v_low, v_high = volts_from_ohms(low, vref, pullup), volts_from_ohms(high, vref, pullup)
    return f"| {label} | {ohms(low)} – {ohms(high)} | {v_low:.3f} – {v_high:.3f} |"


def ok_line(cfg: SiteConfig, path: str) -> str:
    """What `edge config check` prints for a valid file (a test keeps the two equal)."""
    return (
        f"OK: {path}: site {cfg.site.id}, {len(cfg.partitions)} partition(s), "
        f"{len(cfg.zones)} zone(s), {len(cfg.outputs)} output(s), "
        f"hardware {cfg.hardware.backend}"
    )


def _ok_output(toml: str) -> str:
    return ok_line(parse_config(toml, DEFAULT_PATH), DEFAULT_PATH)


def _error_output(toml: str) -> str:
    try:
        parse_config(toml, DEFAULT_PATH)
    except ConfigError as exc:
        return str(exc)
    raise ValueError("the example:bad-site block is a valid configuration; it must show errors")


def _console(output: str) -> str:
    return f"```console\n$ edge config check {DEFAULT_PATH}\n{output}\n```"


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.config.docs FILE`` rewrites FILE; ``--check FILE`` only compares."""
    args = sys.argv[1:] if argv is None else argv
    check = "--check" in args
    paths = [a for a in args if a != "--check"]
    if len(paths) != 1:
        print("usage: python -m edge.config.docs [--check] docs/configuration.md", file=sys.stderr)
        return 64
    path = Path(paths[0])
    current = path.read_text(encoding="utf-8")
    fresh = render_markdown(current)
    if check:
        if fresh != current:
            print(f"{path} is stale: run python -m edge.config.docs {path}", file=sys.stderr)
            return 1
        return 0
    path.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
