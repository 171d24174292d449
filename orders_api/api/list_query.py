"""The query string of ``GET /orders``: its marshmallow schema and the opaque cursor between pages.

The cursor is the position of the last order of a page, ``(created_at, id)``, as URL-safe
base64 of a short JSON array: opaque to clients (they send back what they got), readable by any
instance of the API (no server-side state), and checked like any other parameter when it comes
back, so a cursor that was tampered with is a 422, not a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate

from orders_api.api.request_schemas import INSTRUMENT_PATTERN
from orders_api.domain import OrderStatus
from orders_api.listing import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, ListPosition, OrderListing


def encode_cursor(position: ListPosition) -> str:
    """The opaque cursor a client sends back for the page after ``position``."""
    raw = json.dumps([position.created_at.isoformat(), str(position.id)], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> ListPosition:
    """The position a cursor from :func:`encode_cursor` names.

    :raises ValueError: the cursor was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, order_id = json.loads(raw)
        position = ListPosition(datetime.fromisoformat(created_at), uuid.UUID(order_id))
    except (binascii.Error, UnicodeDecodeError, TypeError, ValueError) as error:
        raise ValueError(f"not a cursor this API made: {error}") from None
    if position.created_at.tzinfo is None:
        raise ValueError("not a cursor this API made")
    return ListPosition(_in_utc(position.created_at), position.id)


def _in_utc(instant: datetime) -> datetime:
    """``instant`` in UTC: PostgreSQL refuses offsets beyond 15:59 that Python accepts (up to 23:59).

    :raises ValueError: the instant falls outside the years datetime can hold once in UTC.
    """
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


class _Instant(fields.AwareDateTime):
    """An ISO 8601 instant with an offset, taken in UTC."""

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: object
    ) -> datetime:
        try:
            return _in_utc(super()._deserialize(value, attr, data, **kwargs))
        except ValueError:
            raise ValidationError("Not a datetime in range.") from None


class _Cursor(fields.Field[ListPosition]):
    """A cursor from a previous page's ``next_cursor``."""

    def _deserialize(
        self, value: object, attr: str | None, data: Mapping[str, Any] | None, **kwargs: object
    ) -> ListPosition:
        if not isinstance(value, str):
            raise ValidationError("Not a valid cursor.")
        try:
            return decode_cursor(value)
        except ValueError:
            raise ValidationError("Not a valid cursor: send back a next_cursor as it was received.") from None


class OrderListQuerySchema(Schema):
    """The parameters of ``GET /orders``; unknown ones are refused, so a typo fails loudly."""

    class Meta:
        """Refuse unknown parameters."""

        unknown = RAISE

    status = fields.String(validate=validate.OneOf([status.value for status in OrderStatus]))
    instrument = fields.String(validate=validate.Regexp(INSTRUMENT_PATTERN, error="Not an ISIN."))
    created_after = _Instant(
        metadata={"description": "Orders created at or after this instant (ISO 8601 with an offset)."}
    )
    created_before = _Instant(
        metadata={"description": "Orders created before this instant (ISO 8601 with an offset)."}
    )
    limit = fields.Integer(
        load_default=DEFAULT_PAGE_SIZE,
        strict=False,
        validate=validate.Range(min=1, max=MAX_PAGE_SIZE),
        metadata={"description": f"Orders per page, {DEFAULT_PAGE_SIZE} unless given."},
    )
    cursor = _Cursor(
        metadata={"description": "A previous page's next_cursor, as received.", "type": "string"}
    )

    @post_load
    def _listing(self, data: dict[str, Any], **kwargs: object) -> OrderListing:
        return OrderListing(
            status=None if "status" not in data else OrderStatus(data["status"]),
            instrument=data.get("instrument"),
            created_after=data.get("created_after"),
            created_before=data.get("created_before"),
            after=data.get("cursor"),
            limit=data["limit"],
        )
