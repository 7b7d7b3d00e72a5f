"""Secrets at rest: sealed with AES-256-GCM under a key kept outside the database.

What the store must give back in clear (a VPN pre-shared key is pushed to
the router) is written sealed: ``v1:`` + base64(nonce | ciphertext | tag),
with the owning row's ID as associated data, so a sealed value copied onto
another row does not open. The key is 32 random bytes in a 0600 file next
to the admin token (``secrets.key``), made at first start; a copy of the
database (a backup, a PostgreSQL replica's disk) holds no key in clear.
Losing the key loses the sealed secrets (the tenants enter them again); every
netmgr replica of one database needs the same key file.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.private_files import load_or_create_key

PREFIX = "v1:"
KEY_BYTES = 32
NONCE_BYTES = 12


class SecretsKeyMismatch(RuntimeError):
    """The database holds secrets sealed under another key."""


class SecretBox:
    """Seals and opens the store's secrets with one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a secrets key is {KEY_BYTES} bytes, not {len(key)}")
        self._aead = AESGCM(key)
        # Names the key in messages without telling anything of it.
        self.key_id = hashlib.sha256(b"cloudnet key id\0" + key).hexdigest()[:12]

    @classmethod
    def from_key_file(cls, path: str | os.PathLike[str]) -> SecretBox:
        """The box of the key in ``path`` (a new random key on first use)."""
        return cls(load_or_create_key(path, KEY_BYTES))

    @classmethod
    def ephemeral(cls) -> SecretBox:
        """A key of this process only (tests: nothing sealed outlives it)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    def seal(self, plaintext: str, row_id: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), row_id.encode())
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, sealed: str, row_id: str) -> str:
        """The plaintext; ValueError (naming the row) when it does not open:
        another key, another row's value, or damage."""
        if not sealed.startswith(PREFIX):
            raise ValueError(f"row {row_id}: not a sealed value")
        try:
            raw = base64.b64decode(sealed[len(PREFIX):], validate=True)
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                      row_id.encode()).decode()
        except (InvalidTag, ValueError) as e:
            raise ValueError(f"row {row_id}: the sealed secret does not open with key "
                             f"{self.key_id} ({type(e).__name__})") from None
