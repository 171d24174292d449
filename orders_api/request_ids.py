"""Request ids: which client request a log line, or a placement message, belongs to.

The API takes the id from the ``X-Request-ID`` header when it is sane, else makes one, and binds
it for the request (:func:`bind`); the placement message of each order carries its request's id
(:func:`for_order`), and the worker binds it again while it processes that message, so that one
id finds an order's lines in the API's log and in the workers'. The current id lives in a
:class:`~contextvars.ContextVar`: each thread (each greenlet under gevent) has its own, and
:mod:`orders_api.logging_setup` adds it to every record.

An id is an opaque label chosen by clients or proxies, so it is bounded in length and limited to
characters that are safe in a header, a log line and a URL before it is trusted anywhere.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar

#: The header that carries the id in and out of the API.
HEADER = "X-Request-ID"
#: Longest id taken from a client; a UUID is 36 characters, a W3C trace id 32.
MAX_LENGTH = 128
#: Letters, digits and ``-._:+=/@``: enough for UUIDs, ULIDs, base64 and ``service:id`` forms,
#: and nothing (space, quote, control character) that could forge or break a log line or header.
_SANE = re.compile(rf"[A-Za-z0-9\-._:+=/@]{{1,{MAX_LENGTH}}}")

_current: ContextVar[str | None] = ContextVar("request_id", default=None)
_of_orders: ContextVar[Mapping[uuid.UUID, str]] = ContextVar("request_ids_of_orders", default={})  # noqa: B039 -- never mutated


def is_sane(candidate: object) -> bool:
    """Whether ``candidate`` may be used as a request id as it is."""
    return isinstance(candidate, str) and _SANE.fullmatch(candidate) is not None


def sanitised(candidate: str | None) -> str:
    """``candidate`` if it is a sane id, else a new one (a UUID4): a bad header is replaced, not refused."""
    if candidate is not None and is_sane(candidate):
        return candidate
    return str(uuid.uuid4())


def current() -> str | None:
    """The id of the request being served (or of the message being processed) here, if any."""
    return _current.get()


def set_current(request_id: str | None) -> None:
    """Make ``request_id`` the current one in this thread, until it is set again.

    For hooks that start and end a unit of work in separate calls (a Dramatiq middleware's
    ``before`` and ``after``): the one setting it must clear it (``None``) at the end.
    """
    _current.set(request_id)


@contextmanager
def bind(request_id: str | None) -> Iterator[None]:
    """Make ``request_id`` the current one for the block, restoring the previous one after it."""
    token = _current.set(request_id)
    try:
        yield
    finally:
        _current.reset(token)


@contextmanager
def bind_orders(request_ids: Mapping[uuid.UUID, str]) -> Iterator[None]:
    """Say, for the block, which request asked for each order: for a batch holding several requests' orders.

    A group commit publishes the orders of several requests from a thread of its own, where no
    single request is current; :func:`for_order` then looks each order up here.
    """
    token = _of_orders.set(request_ids)
    try:
        yield
    finally:
        _of_orders.reset(token)


def for_order(order_id: uuid.UUID) -> str | None:
    """The id of the request that asked for ``order_id``: from :func:`bind_orders`, else the current one."""
    return _of_orders.get().get(order_id) or current()
