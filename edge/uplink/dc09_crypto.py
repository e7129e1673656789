"""AES-CBC of SIA DC-09 messages.

DC-09 encrypts everything after the opening bracket of the data block, through the
timestamp, with AES-CBC and an all-zero IV; random pad characters and a ``|`` go first so
that the plaintext is a whole number of 16-byte blocks and two identical events never give
the same ciphertext. The ciphertext travels as upper-case hex.

`cryptography` is imported only when a key is configured: the alarm service must stay
small in memory on sites that do not encrypt.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

BLOCK = 16
KEY_SIZES = (16, 24, 32)
# Any pad character would do for the standard; letters and digits cannot be mistaken for the
# separators ('|', '[', ']') by any receiver's parser.
PAD_ALPHABET = string.ascii_letters + string.digits


class Dc09Cipher:
    """One receiver key; encrypts our messages and decrypts the receiver's replies."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in KEY_SIZES:
            raise ValueError(f"AES key must be 16, 24 or 32 bytes, not {len(key)}")
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        self._cipher: Any = Cipher(algorithms.AES(key), modes.CBC(bytes(BLOCK)))

    def __repr__(self) -> str:
        return "Dc09Cipher(<key hidden>)"

    def seal(self, tail: str) -> str:
        """Hex ciphertext of ``<pad>|<tail>``; tail runs from after ``[`` through the timestamp."""
        body = "|" + tail
        pad = "".join(secrets.choice(PAD_ALPHABET) for _ in range(BLOCK - len(body) % BLOCK))
        encryptor = self._cipher.encryptor()
        data = encryptor.update((pad + body).encode("ascii")) + encryptor.finalize()
        return str(data.hex().upper())

    def open(self, hex_text: str) -> str:
        """Plaintext of a hex ciphertext (pad included); ValueError if it is not one."""
        try:
            data = bytes.fromhex(hex_text)
        except ValueError:
            raise ValueError("encrypted part is not hex") from None
        if not data or len(data) % BLOCK:
            raise ValueError(f"encrypted part is {len(data)} bytes, not whole AES blocks")
        decryptor = self._cipher.decryptor()
        plain = decryptor.update(data) + decryptor.finalize()
        return str(plain.decode("ascii", "replace"))
