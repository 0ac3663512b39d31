"""Encryption of stored API keys; every call passes ``keys=`` so no settings or DB are needed."""

from __future__ import annotations

import pytest

from playground.accounts.crypto import (
    DECRYPTION_FAILED,
    KeyDecryptionError,
    decrypt,
    encrypt,
    generate_key,
    rotate,
    validate_keys,
)

SECRET = "sk-live-0123456789abcdef"


@pytest.fixture
def old_key() -> str:
    return generate_key()


@pytest.fixture
def new_key() -> str:
    return generate_key()


def assert_clean_failure(error: KeyDecryptionError, *secrets: str) -> None:
    message = str(error)
    assert message == DECRYPTION_FAILED
    for secret in secrets:
        assert secret not in message


def test_round_trip(old_key: str) -> None:
    assert decrypt(encrypt(SECRET, keys=[old_key]), keys=[old_key]) == SECRET


def test_round_trip_non_ascii(old_key: str) -> None:
    assert decrypt(encrypt("clé-ключ-🔑", keys=[old_key]), keys=[old_key]) == "clé-ключ-🔑"


def test_ciphertext_hides_plaintext_and_is_randomised(old_key: str) -> None:
    first = encrypt(SECRET, keys=[old_key])
    second = encrypt(SECRET, keys=[old_key])
    assert SECRET not in first
    assert first != second


def test_old_key_still_decrypts_after_new_key_is_prepended(old_key: str, new_key: str) -> None:
    token = encrypt(SECRET, keys=[old_key])
    assert decrypt(token, keys=[new_key, old_key]) == SECRET


def test_first_key_encrypts(old_key: str, new_key: str) -> None:
    token = encrypt(SECRET, keys=[new_key, old_key])
    assert decrypt(token, keys=[new_key]) == SECRET


def test_rotate_moves_token_to_the_new_key(old_key: str, new_key: str) -> None:
    token = encrypt(SECRET, keys=[old_key])
    rotated = rotate(token, keys=[new_key, old_key])
    assert decrypt(rotated, keys=[new_key]) == SECRET
    with pytest.raises(KeyDecryptionError):
        decrypt(rotated, keys=[old_key])


def test_tampered_token_is_rejected(old_key: str) -> None:
    token = encrypt(SECRET, keys=[old_key])
    middle = len(token) // 2
    flipped = "A" if token[middle] != "A" else "B"
    tampered = token[:middle] + flipped + token[middle + 1 :]
    with pytest.raises(KeyDecryptionError) as caught:
        decrypt(tampered, keys=[old_key])
    assert_clean_failure(caught.value, SECRET, tampered, token, old_key)
    assert "Save the key again" in str(caught.value)


def test_unknown_master_key_is_rejected(old_key: str, new_key: str) -> None:
    token = encrypt(SECRET, keys=[old_key])
    with pytest.raises(KeyDecryptionError) as caught:
        decrypt(token, keys=[new_key])
    assert_clean_failure(caught.value, SECRET, token, old_key, new_key)


def test_rotate_with_unknown_master_key_is_rejected(old_key: str, new_key: str) -> None:
    token = encrypt(SECRET, keys=[old_key])
    with pytest.raises(KeyDecryptionError) as caught:
        rotate(token, keys=[new_key])
    assert_clean_failure(caught.value, SECRET, token)


@pytest.mark.parametrize("garbage", ["", "not base64 at all!", "%%%", "é-ключ", "AAAA", "gAAAAA"])
def test_garbage_token_is_rejected(old_key: str, garbage: str) -> None:
    with pytest.raises(KeyDecryptionError) as caught:
        decrypt(garbage, keys=[old_key])
    assert_clean_failure(caught.value, old_key)


def test_failure_is_not_chained_to_the_cause(old_key: str) -> None:
    # A chained InvalidToken/binascii error could end up in logs next to the token.
    with pytest.raises(KeyDecryptionError) as caught:
        decrypt("garbage", keys=[old_key])
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


def test_generate_key_is_valid_and_unique() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert validate_keys([first, second]) == [first, second]


def test_validate_keys_strips_whitespace(old_key: str) -> None:
    assert validate_keys([f"  {old_key}\n"]) == [old_key]


@pytest.mark.parametrize(
    "bad",
    ["short-but-secret", "x" * 44, "A" * 42 + "==", "", "🔑" * 44],
)
def test_validate_keys_names_position_not_value(old_key: str, bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        validate_keys([old_key, bad])
    message = str(caught.value)
    assert "position 1" in message
    if bad:
        assert bad not in message
    assert old_key not in message


def test_validate_keys_rejects_non_string_entry(old_key: str) -> None:
    with pytest.raises(ValueError, match="position 0"):
        validate_keys([b"bytes-key", old_key])  # type: ignore[list-item]


def test_validate_keys_rejects_empty_list_and_bare_string(old_key: str) -> None:
    with pytest.raises(ValueError, match="No encryption keys"):
        validate_keys([])
    with pytest.raises(ValueError, match="not a single string"):
        validate_keys(old_key)


def test_invalid_keys_argument_raises_value_error_not_decryption_error() -> None:
    # A misconfiguration must not be mistaken for a corrupt stored key.
    with pytest.raises(ValueError, match="position 0"):
        encrypt(SECRET, keys=["nope"])
