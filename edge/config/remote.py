"""Remote commands from the central station: which keys may sign them, and how fresh they must be.

Only public keys live here: they are not secret, so they may sit inline in site.toml (simplest
to provision) or in a file (handy when the central station rotates keys and a provisioning
tool drops PEM files), read as a regular file with a size cap. A private key never does: a PEM
block pasted into ``public_key`` is refused with the way to the public one. (A 32-byte seed in
base64 looks like a public key and cannot be told apart; commands signed with its key would
simply be refused.) Time bounds are capped so that a mistyped value cannot turn replay
protection off: the nonce store keeps nonces for :data:`MAX_AGE_LIMIT_S` whatever is set here.
"""

from __future__ import annotations

import base64
import binascii
from collections import Counter

from pydantic import Field, field_validator, model_validator

from edge.config.models import ID_PATTERN, Strict

MAX_AGE_LIMIT_S = 300  # the nonce store keeps nonces this long, so no window can outlive it
ED25519_PUBLIC_KEY_BYTES = 32


class CommandKey(Strict):
    id: str = Field(
        pattern=ID_PATTERN,
        description="Key id the central station puts in the `key` field of each command.",
    )
    public_key: str | None = Field(
        None,
        max_length=64,
        description="Ed25519 public key: 32 raw bytes in standard base64 (44 characters). "
        "Give this or public_key_file, not both.",
    )
    public_key_file: str | None = Field(
        None,
        max_length=255,
        description="File holding the public key (PEM `BEGIN PUBLIC KEY`, or the base64 line); "
        "a relative path is taken in remote.keys_dir.",
    )

    @field_validator("public_key", mode="before")
    @classmethod
    def _no_pem(cls, v: object) -> object:
        if isinstance(v, str) and ("-----BEGIN" in v or "PRIVATE" in v.upper()):
            raise ValueError(
                "this is a PEM key, not the base64 public key: a private key never goes in "
                "site.toml (it stays on the central station). Paste the output of "
                "`python -m edge.uplink.signing pubkey KEYFILE`, or put a PEM public key in a "
                "file under the secrets directory and set public_key_file"
            )
        return v

    @field_validator("public_key")
    @classmethod
    def _raw_key(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                raw = base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(
                    "not valid base64: paste the output of "
                    "`python -m edge.uplink.signing pubkey KEYFILE`"
                ) from exc
            if len(raw) != ED25519_PUBLIC_KEY_BYTES:
                raise ValueError(
                    f"an Ed25519 public key is {ED25519_PUBLIC_KEY_BYTES} bytes, this one is "
                    f"{len(raw)}: paste the output of "
                    "`python -m edge.uplink.signing pubkey KEYFILE`"
                )
        return v

    @model_validator(mode="after")
    def _one_source(self) -> CommandKey:
        if (self.public_key is None) == (self.public_key_file is None):
            raise ValueError(
                f"key {self.id!r}: give exactly one of public_key (inline base64) "
                "or public_key_file"
            )
        return self


class RemoteConfig(Strict):
    keys: list[CommandKey] = Field(
        default_factory=list,
        max_length=16,
        description="Central-station keys allowed to sign commands; none: every command "
        "is refused.",
    )
    keys_dir: str = Field(
        "/etc/edge/secrets",
        max_length=255,
        description="Directory of relative public_key_file paths.",
    )
    max_age_s: int = Field(
        40,
        ge=5,
        le=MAX_AGE_LIMIT_S,
        description="A command signed longer ago than this (box clock) is refused as stale.",
    )
    max_future_s: int = Field(
        20,
        ge=1,
        le=120,
        description="A command dated further ahead of the box clock than this is refused.",
    )
    nonce_capacity: int = Field(
        10_000,
        ge=100,
        le=100_000,
        description="Most nonces remembered at once; beyond it new commands are refused "
        "until old ones expire.",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> RemoteConfig:
        twice = [k for k, n in Counter(key.id for key in self.keys).items() if n > 1]
        if twice:
            raise ValueError(
                f"remote.keys: id {twice[0]!r} appears more than once; key ids must be unique"
            )
        return self
