"""Load a site TOML file and turn every validation problem into a line an installer can act on.

pydantic reports errors by key path (``zones.2.input.pin``); installers read files by line.
We keep both: each problem is ``file:line: key.path: message``, with the zone or output id
when the path goes through a list, so a mistake is found without counting ``[[zones]]``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.config.site import CROSS_SEPARATOR, SiteConfig
from edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_PATH = "/etc/edge/site.toml"

_HINTS = {
    "extra_forbidden": "unknown key: remove it or check its spelling (see docs/configuration.md)",
    "missing": "required key is missing: add it",
    "literal_error": None,
    "union_tag_invalid": 'input.kind must be "gpio" or "adc"',
}


def default_path() -> str:
    """The configuration path when none is given: $EDGE_CONFIG, else /etc/edge/site.toml."""
    return os.environ.get("EDGE_CONFIG") or DEFAULT_PATH


def load_config(path: str | os.PathLike[str] | None = None) -> SiteConfig:
    """Read, validate and resolve a site configuration; ConfigError lists every problem."""
    p = Path(path or default_path())
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            str(p), ["file not found: create it (see hw-sim/sites/demo.toml) or pass --config PATH"]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"cannot read the file: {exc}"]) from exc
    return parse_config(text, str(p))


def parse_config(text: str, name: str = "<config>") -> SiteConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, [f"TOML syntax error: {exc}"]) from exc
    try:
        cfg = SiteConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            problems.extend(_format(err, text, data, name))
        raise ConfigError(name, problems) from exc
    return _resolve_paths(cfg, Path(name).resolve().parent)


def _resolve_paths(cfg: SiteConfig, base: Path) -> SiteConfig:
    paths = cfg.paths.model_copy(
        update={
            "data_dir": str((base / cfg.paths.data_dir).resolve()),
            "run_dir": str((base / cfg.paths.run_dir).resolve()),
        }
    )
    web = cfg.web.model_copy(
        update={"credentials_file": str((base / cfg.web.credentials_file).resolve())}
    )
    return cfg.model_copy(update={"paths": paths, "web": web})


def _format(err: Any, text: str, data: dict[str, Any], name: str) -> list[str]:
    loc = [part for part in err["loc"] if not _is_union_tag(part)]
    if not loc and err["type"] == "value_error":
        return [_cross(msg, text, name) for msg in _message(err).split(CROSS_SEPARATOR)]
    key = _key_path(loc, data)
    line = locate(text, loc)
    where = f"{name}:{line}" if line else name
    hint = _HINTS.get(err["type"])
    msg = _message(err)
    if err["type"] == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    return [f"{where}: {key or '(top level)'}: {msg}" + (f" — {hint}" if hint else "")]


def _message(err: Any) -> str:
    return str(err["msg"]).removeprefix("Value error, ")


def _cross(msg: str, text: str, name: str) -> str:
    """A rule spanning sections: point at the line of the last item it names."""
    ids = re.findall(r"(?:zone|output) '([^']+)'", msg)
    key = re.match(r"^([a-z_]+)\.([a-z_]+) ", msg)
    line = locate(text, [key.group(1), key.group(2)]) if key else None
    for ident in ids:
        pattern = re.compile(rf"^\s*id\s*=\s*[\"']{re.escape(ident)}[\"']", re.M)
        starts = [m.start() for m in pattern.finditer(text)]
        if starts:
            line = text.count("\n", 0, starts[-1]) + 1
    return f"{name}:{line}: {msg}" if line else f"{name}: {msg}"


def _is_union_tag(part: Any) -> bool:
    return part in ("gpio", "adc")


def _key_path(loc: list[Any], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            node = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(node, dict) and "id" in node:
                out += f"(id={node['id']!r})"
        else:
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


_HEADER = re.compile(r"^\s*\[(\[)?\s*([A-Za-z0-9_.\-]+)\s*\]?\]\s*(#.*)?$")


def locate(text: str, loc: list[Any]) -> int | None:
    """Best line number for a key path: the key's own line, else its table's header."""
    target_table, key = _split(loc)
    counters: dict[str, int] = {}
    table: tuple[Any, ...] = ()
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            name = m.group(2)
            if m.group(1):
                counters[name] = counters.get(name, -1) + 1
                table = (*name.split("."), counters[name])
            else:
                table = tuple(name.split("."))
            if table == target_table:
                header_line = number
            continue
        if table == target_table and key and re.search(rf"(^|[\s{{,]){re.escape(key)}\s*=", line):
            return number
    return header_line


def _split(loc: list[Any]) -> tuple[tuple[Any, ...], str | None]:
    """('zones', 2, 'input', 'pin') -> table ('zones', 2), key 'input' (its line holds pin)."""
    if not loc:
        return (), None
    parts = list(loc)
    # A table is identified by the path up to the last list index, or its first element.
    idx = max((i for i, p in enumerate(parts) if isinstance(p, int)), default=-1)
    if idx >= 0:
        return tuple(parts[: idx + 1]), next((str(p) for p in parts[idx + 1 :]), None)
    if len(parts) == 1:
        return (), str(parts[0])
    return (parts[0],), str(parts[1])
