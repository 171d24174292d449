"""The rules of idempotent requests, free of any framework, beside the order's own in ``domain``.

A client that sends ``POST /orders`` with an ``Idempotency-Key`` may send it again, as often as
it likes, and get the order the first request created instead of a second one. That makes a
``500`` whose commit outcome the client could not learn safe to retry. Keys are global: the
service has no client identity yet, so two clients that pick the same key share it (random
keys, such as UUIDs, make that practically impossible).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

#: How long a key is remembered. A repeat within this time gets the first request's order; a
#: key older than this is treated as never used, so a client must not rely on retries that
#: span a day. Expired keys are purged by ``purge_expired_idempotency_keys``.
KEY_TTL: Final = timedelta(hours=24)

#: Longest key accepted (the column's check constraint says the same).
MAX_KEY_LENGTH: Final = 255

# Printable ASCII, spaces allowed inside but not at either end (HTTP would strip them anyway).
_KEY_PATTERN: Final = re.compile(r"\A[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?\Z")


class InvalidIdempotencyKeyError(ValueError):
    """The client's key is empty, too long, or not printable ASCII."""


class IdempotencyKeyReusedError(Exception):
    """The key was already used with a different request body; it cannot name a second order."""

    def __init__(self, key: str) -> None:
        super().__init__(f"idempotency key {key!r} was already used with a different request")
        self.key = key


class IdempotencyKeyInFlightError(Exception):
    """Another request with this key is still being processed; its outcome is not known yet."""

    def __init__(self, key: str) -> None:
        super().__init__(f"a request with idempotency key {key!r} is still in progress")
        self.key = key


def validated_key(key: str) -> str:
    """Return ``key`` if it is 1 to 255 printable ASCII characters without surrounding spaces.

    :raises InvalidIdempotencyKeyError: it is not.
    """
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise InvalidIdempotencyKeyError(f"Must be 1 to {MAX_KEY_LENGTH} characters long.")
    if not _KEY_PATTERN.match(key):
        raise InvalidIdempotencyKeyError(
            "Must be printable ASCII characters only, without leading or trailing spaces."
        )
    return key


def request_fingerprint(body: Mapping[str, Any]) -> str:
    """The SHA-256 of ``body`` as canonical JSON: the same for the same request, however formatted.

    Key order and whitespace do not matter; values do, as the client wrote them after JSON
    parsing (``150.5`` and ``150.50`` are the same number, ``"150.50"`` is a different request).
    A value JSON has no type for (a ``Decimal``, should the body ever be parsed into one) is
    written as its string.
    """
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class IdempotentRequest:
    """A client's request as far as idempotency cares: its key and what it asked for."""

    key: str
    fingerprint: str


@dataclass(frozen=True)
class IdempotencyKey:
    """A used key: which request first came with it, the order it created, and when."""

    key: str
    request_fingerprint: str
    order_id: uuid.UUID
    created_at: datetime

    def expired(self, now: datetime) -> bool:
        """Whether the key is older than :data:`KEY_TTL` and so counts as never used."""
        return self.created_at < now - KEY_TTL
