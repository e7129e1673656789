"""Load a site TOML file and turn every validation problem into a line an installer can act on.

pydantic reports errors by key path (``zones.2.input.pin``); installers read files by line.
We keep both: each problem is ``file:line: key.path: message``, with the zone or output id
when the path goes through a list, so a mistake is found without counting ``[[zones]]``.

Whatever the input (any bytes, any TOML document), the outcome is a configuration or a
:class:`ConfigError`, never another exception: the file is read with a size cap and must be a
regular file, nesting too deep for the parser is reported, no key or value may carry a control
character (checked here for every key with its line, and by :class:`~edge.config.models.Strict`
for every field), and every message is printed with control characters escaped.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edge.config.models import PRINTABLE_FIX, UNPRINTABLE, unprintable_problem
from edge.config.site import CROSS_SEPARATOR, SiteConfig
from edge.errors import ConfigError
from edge.secret_files import FileCheckError, read_small_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

DEFAULT_PATH = "/etc/edge/site.toml"
MAX_CONFIG_BYTES = 1024 * 1024  # a real site file is a few kilobytes
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")

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
    name = printable(str(p))
    if "\0" not in str(p) and not os.path.lexists(p):
        raise ConfigError(
            name, ["file not found: create it (see hw-sim/sites/demo.toml) or pass --config PATH"]
        )
    try:
        data = read_small_file(p, "configuration file", max_bytes=MAX_CONFIG_BYTES)
    except FileCheckError as exc:
        raise ConfigError(name, [printable(str(exc))]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            name, [f"not UTF-8 text (bad byte at offset {exc.start}): save the file as UTF-8"]
        ) from None
    return parse_config(text, str(p))


def parse_config(text: str, name: str = "<config>") -> SiteConfig:
    """Validate TOML ``text``; ``name`` (the file) prefixes every problem."""
    source, name = name, printable(name)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, [f"TOML syntax error: {printable(str(exc))}"]) from None
    except RecursionError:
        raise ConfigError(
            name, ["arrays or tables are nested too deeply: a site file needs a few levels"]
        ) from None
    flagged = _unprintable(data)
    problems = [_at(text, name, loc, msg, data) for loc, msg in flagged]
    problems.sort(key=lambda p: int(m.group(1)) if (m := re.match(r".*?:(\d+): ", p)) else 0)
    try:
        cfg = SiteConfig.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            if not _repeats(err, flagged):
                problems.extend(_format(err, text, data, name))
        raise ConfigError(name, [printable(p) for p in problems]) from None
    if problems:
        raise ConfigError(name, [printable(p) for p in problems])
    return _resolve_paths(cfg, source, text)


def printable(text: str) -> str:
    """``text`` with every control character written as an escape (``\\x00``, ``\\n``), so a
    message cannot break a line or send a terminal an escape sequence."""
    return UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1], text)


def _unprintable(data: Any) -> list[tuple[tuple[Any, ...], str]]:
    """(key path, message) of every key or string value holding a control character."""
    found: list[tuple[tuple[Any, ...], str]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                problem = unprintable_problem(key)
                if problem:
                    found.append(((*loc, key), problem.replace("the value", "the key", 1)))
                else:
                    stack.append((value, (*loc, key)))
        elif isinstance(node, list):
            stack.extend((item, (*loc, i)) for i, item in enumerate(node))
        elif isinstance(node, str) and UNPRINTABLE.search(node):
            found.append((loc, str(unprintable_problem(node))))
    return sorted(found, key=lambda f: [str(p) for p in f[0]])  # a stable order


def _repeats(err: Any, flagged: list[tuple[tuple[Any, ...], str]]) -> bool:
    """Whether a pydantic error repeats a key already reported as unprintable: it sits at or
    below that key, or it is the model's own refusal of the list or mapping holding it."""
    path = tuple(p for p in err["loc"] if not _is_union_tag(p))
    ours = PRINTABLE_FIX in str(err.get("msg", ""))
    return any(
        path[: len(where)] == where or (ours and where[: len(path)] == path) for where, _ in flagged
    )


def _at(text: str, name: str, loc: tuple[Any, ...], message: str, data: Any) -> str:
    keys = list(loc)
    while keys and isinstance(keys[-1], int):
        keys.pop()  # an item of an inline list: the line of the list's key
    line = locate(text, keys)
    where = f"{name}:{line}" if line else name
    return f"{where}: {_key_path(list(loc), data)}: {message}"


def _resolve_paths(cfg: SiteConfig, source: str, text: str) -> SiteConfig:
    """Relative paths are taken against the configuration file's directory."""
    base = _resolved(Path(source), source, text, ())
    values = {
        ("paths", "data_dir"): cfg.paths.data_dir,
        ("paths", "run_dir"): cfg.paths.run_dir,
        ("web", "credentials_file"): cfg.web.credentials_file,
        ("bus", "identities_dir"): cfg.bus.identities_dir,
    }
    done = {loc: str(_resolved(base.parent / v, source, text, loc)) for loc, v in values.items()}
    paths = cfg.paths.model_copy(
        update={"data_dir": done["paths", "data_dir"], "run_dir": done["paths", "run_dir"]}
    )
    web = cfg.web.model_copy(update={"credentials_file": done["web", "credentials_file"]})
    bus = cfg.bus.model_copy(update={"identities_dir": done["bus", "identities_dir"]})
    return cfg.model_copy(update={"paths": paths, "bus": bus, "web": web})


def _resolved(path: Path, source: str, text: str, loc: tuple[str, ...]) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symbolic link loop
        line = locate(text, list(loc)) if loc else None
        where = printable(source) + (f":{line}" if line else "")
        key = ".".join(loc) or "(the configuration file)"
        raise ConfigError(
            printable(source),
            [
                f"{where}: {key}: {printable(str(path))} cannot be resolved "
                f"({printable(str(exc))}) — fix the path or the symbolic link loop"
            ],
        ) from None


def _format(err: Any, text: str, data: dict[str, Any], name: str) -> list[str]:
    loc = [part for part in err["loc"] if not _is_union_tag(part)]
    if not loc and err["type"] == "value_error":
        return [_cross(msg, text, name) for msg in _message(err).split(CROSS_SEPARATOR)]
    msg = _message(err)
    loc, msg = _inner_key(loc, msg, data)
    key = _key_path(loc, data)
    line = locate(text, loc) or (locate(text, [*loc, ""]) if loc else None)
    where = f"{name}:{line}" if line else name
    hint = _HINTS.get(err["type"])
    if err["type"] == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    return [f"{where}: {key or '(top level)'}: {msg}" + (f" — {hint}" if hint else "")]


def _inner_key(loc: list[Any], msg: str, data: Any) -> tuple[list[Any], str]:
    """A section's rule about one of its keys (``key_file: ...``) points at that key."""
    m = re.match(r"([a-z_][a-z0-9_]*): ", msg)
    node = data
    for part in loc:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
    if m and isinstance(node, dict) and m.group(1) in node:
        return [*loc, m.group(1)], msg[m.end() :]
    return loc, msg


def _has(node: dict[str, Any] | list[Any], part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)


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
            out += ("." if out else "") + _key(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _key(part: str) -> str:
    """A key as TOML spells it: bare when it can be, else quoted with escapes."""
    return part if _BARE_KEY.fullmatch(part) else json.dumps(part)


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
