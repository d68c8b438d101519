"""Encryption at rest of exchange credentials."""

from __future__ import annotations

import base64

import pytest

from cryptodesk.adapters.secrets import SecretBox, SecretsError, generate_key
from cryptodesk.portfolio.accounts import AccountSpec, ExchangeCredentials

KEY = "3q2HMzTLMpiN6mWxbJ9Y0h7tr8Q4cn0u5cNwq-UHslU="
OTHER = "kV0eF1hU5sGZ2y0X8oV3jJ8yJ3m7aP6qE0w9rT1uY2I="


def test_generated_keys_are_32_random_bytes() -> None:
    a, b = generate_key(), generate_key()
    assert a != b
    assert len(a) == 44
    assert len(base64.urlsafe_b64decode(a)) == 32
    assert SecretBox(a).decrypt(SecretBox(a).encrypt("x")) == "x"


def test_round_trip_and_no_plaintext_in_the_token() -> None:
    box = SecretBox(KEY)
    token = box.encrypt("api-secret-ünïcode")
    assert "api-secret" not in token
    assert box.decrypt(token) == "api-secret-ünïcode"
    assert box.encrypt("same") != box.encrypt("same")  # random IV per token


def test_a_wrong_key_is_a_clear_error() -> None:
    token = SecretBox(KEY).encrypt("s3cret")
    with pytest.raises(SecretsError, match="not the one they were encrypted with") as info:
        SecretBox(OTHER).decrypt(token)
    assert "s3cret" not in str(info.value)
    assert KEY not in str(info.value)


def test_a_tampered_token_fails() -> None:
    box = SecretBox(KEY)
    token = box.encrypt("s3cret")
    flipped = token[:20] + ("A" if token[20] != "A" else "B") + token[21:]
    with pytest.raises(SecretsError):
        box.decrypt(flipped)
    with pytest.raises(SecretsError):
        box.decrypt("not a token at all")


@pytest.mark.parametrize("bad", ["", "   ", "short", "x" * 44, "é" * 44])
def test_an_unusable_key_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(SecretsError) as info:
        SecretBox(bad)
    if bad.strip():
        assert bad not in str(info.value)


def test_old_keys_still_read_after_rotation() -> None:
    old_token = SecretBox(OTHER).encrypt("s3cret")
    rotated = SecretBox(KEY, old_keys=[OTHER])
    assert rotated.decrypt(old_token) == "s3cret"
    fresh = rotated.rotate(old_token)
    assert SecretBox(KEY).decrypt(fresh) == "s3cret"
    with pytest.raises(SecretsError):
        SecretBox(OTHER).decrypt(fresh)


def test_reprs_hide_keys_and_credentials() -> None:
    assert KEY not in repr(SecretBox(KEY))
    creds = ExchangeCredentials("my-api-key", "my-secret", "my-pass")
    spec = AccountSpec("main", "exchange", exchange="binance", credentials=creds)
    for text in (repr(creds), str(creds), repr(spec), str(spec), f"{creds!r} {spec}"):
        for secret in ("my-api-key", "my-secret", "my-pass"):
            assert secret not in text
    assert "has_credentials=True" in repr(spec)
