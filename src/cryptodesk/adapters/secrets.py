"""Encryption at rest for small secrets (exchange API keys), with Fernet.

Fernet is AES-128-CBC plus HMAC-SHA256 under one 32-byte key, with the
encryption time inside each token: a wrong or tampered token never decrypts
to garbage, it fails. The key comes from settings as the urlsafe base64 text
``generate_key`` prints. Old keys may be listed after the current one while
keys are rotated: tokens are always written under the current key and read
under any of them.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretsError(Exception):
    """A key is unusable or a token cannot be read with it; the message names no secret."""


def generate_key() -> str:
    """A new random key, as settings take it."""
    return Fernet.generate_key().decode("ascii")


def _fernet(key: str) -> Fernet:
    try:
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise SecretsError(
            "the accounts key is not a Fernet key (44 characters of urlsafe base64): "
            "make one with `cryptodesk accounts keygen`"
        ) from None


class SecretBox:
    """Encrypts and decrypts text under the configured key (and older ones)."""

    __slots__ = ("_fernet",)

    def __init__(self, key: str, *, old_keys: Sequence[str] = ()) -> None:
        if not isinstance(key, str) or not key.strip():
            raise SecretsError("the accounts key is empty")
        self._fernet = MultiFernet([_fernet(k) for k in (key, *old_keys)])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError):
            raise SecretsError(
                "stored credentials cannot be decrypted: the accounts key is not the one "
                "they were encrypted with (or the stored value was altered)"
            ) from None

    def rotate(self, token: str) -> str:
        """``token`` re-encrypted under the current key (after a key rotation)."""
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError):
            raise SecretsError(
                "stored credentials cannot be decrypted with any configured key"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"
