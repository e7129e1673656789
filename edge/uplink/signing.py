"""Ed25519 signatures of remote commands: canonical bytes, key files, and a signing helper.

Why a canonical form: the signature must cover what the box will execute, not the way the JSON
happened to be spelled on the wire, so the box re-serialises the fields it parsed and checks
the signature over those bytes. Both sides must produce the same bytes, hence a strict form
(docs/commands.md): sorted keys, no spaces, UTF-8 without escaping, and no floating-point
numbers (their decimal spelling differs between languages).

Why lazy imports: ``cryptography`` is a few megabytes; edge-alarm imports this module but only
pays for it when keys are loaded. Run ``python -m edge.uplink.signing --help`` for the helper
the tests and the reference console use on the central side.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import json
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EX_USAGE, CommandError, ConfigError
from edge.secret_files import FileCheckError, read_secret, read_small_file

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

    from edge.config.remote import RemoteConfig

VERSION = 1
MAX_SAFE_INT = 2**53 - 1  # integers every JSON implementation reads exactly
SEED_BYTES = 32
KEY_FILE_MAX_BYTES = 16 * 1024  # a PEM key is a few hundred bytes
_SEP = (",", ":")


def canonical_bytes(
    *,
    site: str,
    name: str,
    args: dict[str, Any],
    nonce: str,
    ts: str,
    operator: str,
    key_id: str,
    v: int = VERSION,
) -> bytes:
    """The bytes an Ed25519 signature covers; ValueError when ``args`` hold a float or similar."""
    _check_json(args, depth=1)
    body = {
        "args": args,
        "key": key_id,
        "name": name,
        "nonce": nonce,
        "operator": operator,
        "site": site,
        "ts": ts,
        "v": v,
    }
    text = json.dumps(body, sort_keys=True, separators=_SEP, ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on lone surrogates


def _check_json(value: Any, depth: int) -> None:
    """Only the JSON values whose spelling is the same in every language may be signed."""
    if depth > 32:
        raise ValueError("arguments are nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INT:
            raise ValueError(f"integer {value} is beyond ±(2^53-1)")
        return
    if isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
            _check_json(item, depth + 1)
        return
    raise ValueError(
        f"{type(value).__name__} values cannot be signed: use strings, integers, booleans, "
        "null, lists and objects"
    )


def utc_stamp(when: dt.datetime) -> str:
    """Command timestamp format: UTC, milliseconds, Z."""
    when = when.astimezone(dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def new_nonce() -> str:
    """24 url-safe characters from 18 random bytes: collisions are out of reach."""
    return secrets.token_urlsafe(18)


def sign_command(
    private_key: Ed25519PrivateKey,
    *,
    key_id: str,
    site: str,
    name: str,
    args: dict[str, Any],
    operator: str,
    nonce: str | None = None,
    ts: str | dt.datetime | None = None,
) -> dict[str, Any]:
    """A complete signed command payload, as the central station publishes it."""
    nonce = nonce or new_nonce()
    if ts is None:
        ts = dt.datetime.now(dt.timezone.utc)
    stamp = ts if isinstance(ts, str) else utc_stamp(ts)
    data = canonical_bytes(
        site=site, name=name, args=args, nonce=nonce, ts=stamp, operator=operator, key_id=key_id
    )
    sig = base64.b64encode(private_key.sign(data)).decode("ascii")
    return {
        "v": VERSION, "site": site, "name": name, "args": args, "nonce": nonce, "ts": stamp,
        "operator": operator, "key": key_id, "sig": sig,
    }  # fmt: skip


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(seed)


def generate_private_key() -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The form `[[remote.keys]] public_key` expects: 32 raw bytes, standard base64."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """A PKCS#8 PEM private key, or a file holding the 32-byte seed in base64.

    The file follows the one rule of every secret (edge.secret_files): regular, not a
    symbolic link, owned by this user or root, mode 0600, read with a cap.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        data = read_secret(path, "private key", max_bytes=KEY_FILE_MAX_BYTES)
    except FileCheckError as exc:
        raise CommandError(str(exc)) from None
    try:
        if b"-----BEGIN" in data:
            key = load_pem_private_key(data, password=None)
            if not isinstance(key, Ed25519PrivateKey):
                raise ValueError("this PEM key is not an Ed25519 key")
            return key
        seed = base64.b64decode(data.strip(), validate=True)
        if len(seed) != SEED_BYTES:
            raise ValueError(f"a base64 seed must decode to {SEED_BYTES} bytes, not {len(seed)}")
        return Ed25519PrivateKey.from_private_bytes(seed)
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise CommandError(
            f"{path}: cannot load an Ed25519 private key ({exc}); create one with "
            "`python -m edge.uplink.signing keygen FILE`"
        ) from None


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """A PEM `PUBLIC KEY` or the 32 raw bytes in base64; ValueError says which part is wrong."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    if b"-----BEGIN" in data:
        try:
            key = load_pem_public_key(data)
        except UnsupportedAlgorithm as exc:
            raise ValueError(f"unsupported PEM key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("this PEM public key is not an Ed25519 key")
        return key
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except binascii.Error as exc:
        raise ValueError("neither PEM nor base64") from exc
    if len(raw) != SEED_BYTES:
        raise ValueError(f"the base64 key decodes to {len(raw)} bytes instead of {SEED_BYTES}")
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_keys(cfg: RemoteConfig) -> dict[str, Ed25519PublicKey]:
    """Every configured key by id; ConfigError names each key that cannot be used."""
    keys: dict[str, Ed25519PublicKey] = {}
    problems: list[str] = []
    for n, entry in enumerate(cfg.keys):
        where = f"remote.keys[{n}](id={entry.id!r})"
        try:
            if entry.public_key is not None:
                keys[entry.id] = load_public_key(entry.public_key.encode("ascii"))
                continue
            path = Path(cfg.keys_dir) / str(entry.public_key_file)
            # Public, so not a secret; still a regular file read with a cap.
            data = read_small_file(path, "public_key_file", max_bytes=KEY_FILE_MAX_BYTES)
            keys[entry.id] = load_public_key(data)
        except FileCheckError as exc:
            problems.append(f"{where}: {exc}")
        except ValueError as exc:
            problems.append(f"{where}: not a usable Ed25519 public key ({exc})")
    if problems:
        raise ConfigError("remote.keys", problems)
    return keys


# --- command-line helper (central side, tests, reference console) --------------------------


def _cmd_keygen(args: argparse.Namespace) -> int:
    path = Path(args.file)
    key = generate_private_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CommandError(
            f"{path} exists: keygen never overwrites a key; pick another file"
        ) from exc
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    print(f"# private key written to {path} (keep it on the central station only)")
    print(f'[[remote.keys]]\nid = "{args.id}"\npublic_key = "{public_key_b64(key)}"')
    return 0


def _cmd_pubkey(args: argparse.Namespace) -> int:
    print(public_key_b64(load_private_key(Path(args.file))))
    return 0


def _cmd_sign(args: argparse.Namespace) -> int:
    try:
        cmd_args = json.loads(args.args)
    except ValueError as exc:
        raise CommandError(f'ARGS is not JSON: {exc}; e.g. \'{{"partition":"main"}}\'') from exc
    if not isinstance(cmd_args, dict):
        raise CommandError('ARGS must be a JSON object, e.g. \'{"partition":"main"}\'')
    key = load_private_key(Path(args.key))
    try:
        payload = sign_command(
            key, key_id=args.key_id, site=args.site, name=args.name, args=cmd_args,
            operator=args.operator, nonce=args.nonce, ts=args.ts,
        )  # fmt: skip
    except ValueError as exc:
        raise CommandError(f"cannot sign these arguments: {exc}") from exc
    print(f"# topic: sites/{args.site}/cmd/{args.name}", file=sys.stderr)
    print(json.dumps(payload, ensure_ascii=False, separators=_SEP))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m edge.uplink.signing",
        description="Central-side helper: make Ed25519 keys and sign remote commands.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("keygen", help="new private key (PEM, mode 0600) + the box's config lines")
    p.add_argument("file")
    p.add_argument("--id", default="central-1", help="key id to print in the config lines")
    p.set_defaults(func=_cmd_keygen)
    p = sub.add_parser("pubkey", help="print the public key (base64) of a private key file")
    p.add_argument("file")
    p.set_defaults(func=_cmd_pubkey)
    p = sub.add_parser("sign", help="print a signed command payload (JSON) on stdout")
    p.add_argument("--key", required=True, help="private key file (PEM or base64 seed)")
    p.add_argument("--key-id", required=True)
    p.add_argument("--site", required=True)
    p.add_argument("--operator", required=True)
    p.add_argument("--nonce", default=None, help="default: 24 random url-safe characters")
    p.add_argument("--ts", default=None, help="default: now, e.g. 2025-01-15T08:30:00.000Z")
    p.add_argument("name", help="command name: arm, disarm, bypass, output, ...")
    p.add_argument("args", nargs="?", default="{}", help="arguments as a JSON object")
    p.set_defaults(func=_cmd_sign)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EX_USAGE


if __name__ == "__main__":
    sys.exit(main())
