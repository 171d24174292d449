"""What counts as a valid Idempotency-Key, as the same request, and as an expired key."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from orders_api.idempotency import (
    KEY_TTL,
    MAX_KEY_LENGTH,
    IdempotencyKey,
    InvalidIdempotencyKeyError,
    request_fingerprint,
    validated_key,
)
from tests.unit.fakes import T0

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "x" * MAX_KEY_LENGTH,
        str(uuid.uuid4()),
        "order 42 / retry",
        "!~",
        'key-with-"quotes"-and-{braces}',
    ],
    ids=["one-character", "longest", "uuid", "space-inside", "printable-ends", "punctuation"],
)
def test_accepts_one_to_255_printable_ascii_characters(key: str) -> None:
    assert validated_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "x" * (MAX_KEY_LENGTH + 1),
        " leading",
        "trailing ",
        " ",
        "tab\tinside",
        "new\nline",
        "del\x7f",
        "caf\xe9",
    ],
    ids=[
        "empty",
        "too-long",
        "leading-space",
        "trailing-space",
        "only-space",
        "tab",
        "newline",
        "del",
        "non-ascii",
    ],
)
def test_refuses_anything_else(key: str) -> None:
    with pytest.raises(InvalidIdempotencyKeyError):
        validated_key(key)


def test_the_fingerprint_ignores_key_order_and_formatting() -> None:
    assert request_fingerprint({"type": "market", "quantity": 3}) == request_fingerprint(
        {"quantity": 3, "type": "market"}
    )


@pytest.mark.parametrize(
    "other",
    [{"type": "market", "quantity": 4}, {"type": "market", "quantity": "3"}, {"type": "market"}],
    ids=["other-value", "other-json-type", "missing-field"],
)
def test_the_fingerprint_tells_different_requests_apart(other: dict[str, object]) -> None:
    assert request_fingerprint({"type": "market", "quantity": 3}) != request_fingerprint(other)


def test_the_fingerprint_is_a_sha256_hex_digest() -> None:
    fingerprint = request_fingerprint({})

    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0


@pytest.mark.parametrize(
    ("age", "expired"),
    [(timedelta(0), False), (KEY_TTL, False), (KEY_TTL + timedelta(microseconds=1), True)],
    ids=["new", "exactly-the-ttl", "older-than-the-ttl"],
)
def test_a_key_expires_once_older_than_its_lifetime(age: timedelta, expired: bool) -> None:
    record = IdempotencyKey("k", "f", uuid.uuid4(), created_at=T0)

    assert record.expired(T0 + age) is expired
