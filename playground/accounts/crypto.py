"""Authenticated encryption of stored provider API keys.

Master keys come from ``settings.PLAYGROUND_ENCRYPTION_KEYS``: the first one encrypts, all of
them decrypt, so an operator rotates by prepending a new key, re-encrypting stored values with
``rotate`` and only then dropping the old key.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

NOT_A_KEY = "is not a valid Fernet key (expected url-safe base64 encoding of 32 bytes)"
DECRYPTION_FAILED = (
    "This stored API key cannot be decrypted: it was changed, or it was encrypted under a "
    "master key that is no longer configured. Save the key again."
)


class InvalidMasterKey(ValueError):
    """A configured master key is unusable. ``position`` (from 0) says which one, if one does:
    the key itself is never repeated."""

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class KeyDecryptionError(Exception):
    """A stored token failed authentication; the message never carries token or key material."""

    def __init__(self, message: str = DECRYPTION_FAILED) -> None:
        super().__init__(message)


def generate_key() -> str:
    return Fernet.generate_key().decode("ascii")


def validate_keys(raw: Sequence[str]) -> list[str]:
    """Return the keys stripped of surrounding whitespace, or raise ``InvalidMasterKey``.

    Messages name the position only: a near-miss key is still secret material. Settings call
    this before Django's apps are loaded, so this module imports nothing of Django at the top.
    """
    if isinstance(raw, str):
        # A bare string would be iterated character by character.
        raise InvalidMasterKey(
            "Encryption keys must be a list of Fernet keys, not a single string."
        )
    keys = [_validate_key(position, entry) for position, entry in enumerate(raw)]
    if not keys:
        raise InvalidMasterKey(
            "No encryption keys are configured; at least one Fernet key is needed."
        )
    return keys


def _validate_key(position: int, entry: object) -> str:
    problem = InvalidMasterKey(f"Encryption key at position {position} {NOT_A_KEY}.", position)
    if not isinstance(entry, str):
        raise problem
    key = entry.strip()
    try:
        Fernet(key)
    except ValueError:  # binascii.Error is a ValueError too
        raise problem from None  # the cause may quote the key
    return key


@lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in validate_keys(keys)])


def _fernet(keys: Sequence[str] | None) -> MultiFernet:
    if keys is None:
        # Imported lazily so the module (and its tests) work without configured settings.
        from django.conf import settings

        keys = settings.PLAYGROUND_ENCRYPTION_KEYS
    return _multi_fernet(tuple(keys))


def encrypt(plaintext: str, keys: Sequence[str] | None = None) -> str:
    """Encrypt under the first master key; the result is a Fernet token as text."""
    return _fernet(keys).encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(token: str, keys: Sequence[str] | None = None) -> str:
    fernet = _fernet(keys)
    try:
        return fernet.decrypt(token).decode("utf-8")
    except (InvalidToken, ValueError, TypeError):
        # ValueError covers non-ASCII tokens and non-UTF-8 plaintext; ``from None`` keeps
        # the token out of chained tracebacks in logs.
        raise KeyDecryptionError() from None


def rotate(token: str, keys: Sequence[str] | None = None) -> str:
    """Re-encrypt a token under the first master key (it may have been under any of them)."""
    fernet = _fernet(keys)
    try:
        return fernet.rotate(token).decode("ascii")
    except (InvalidToken, ValueError, TypeError):
        raise KeyDecryptionError() from None
