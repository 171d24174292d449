"""Validation of the ``POST /orders`` request body.

The schema is the single gate between untrusted JSON and the service layer: whatever it
loads is already in the shapes the domain and the database expect (``Decimal`` prices,
bounded integers), so nothing downstream needs to re-check the client's input. It knows
nothing about Flask; the entrypoint turns its :exc:`~marshmallow.ValidationError` into
the HTTP error contract.
"""

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

#: Order types a client may place; a limit order carries a price, a market order does not.
ORDER_TYPES: Final = ("market", "limit")

#: Sides of the book an order may be on.
SIDES: Final = ("buy", "sell")

#: Shape of an instrument identifier: ISIN-sized, uppercase ASCII letters and digits.
#: The ISIN checksum is deliberately not verified; the exchange is the authority on that.
INSTRUMENT_PATTERN: Final = re.compile(r"\A[A-Z0-9]{12}\Z")

#: Largest accepted quantity. Far below the PostgreSQL BIGINT limit, so that sums over
#: many orders cannot overflow either, and large enough for any real order.
MAX_QUANTITY: Final = 1_000_000_000

#: Number of decimal places a limit price may carry (the column is NUMERIC(12,2)).
LIMIT_PRICE_PLACES: Final = 2

#: Largest accepted limit price: 10 digits before the point, 2 after, as NUMERIC(12,2) holds.
MAX_LIMIT_PRICE: Final = Decimal("9999999999.99")

_CENT: Final = Decimal(1).scaleb(-LIMIT_PRICE_PLACES)

# A plain decimal string: no exponent, sign "+", spaces, underscores, NaN or Infinity,
# all of which ``Decimal()`` would otherwise accept.
_PLAIN_DECIMAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")

_INSTRUMENT_ERROR: Final = "Must be 12 characters, uppercase letters A-Z and digits 0-9 only (ISIN format)."
_LIMIT_PRICE_REQUIRED: Final = "Required for limit orders."
_LIMIT_PRICE_FORBIDDEN: Final = "Not allowed for market orders; omit it or send null."


class _LimitPrice(fields.Field[Decimal]):
    """A positive price with at most two decimal places, loaded as an exact ``Decimal``.

    marshmallow's own ``Decimal`` field rounds extra places away and accepts exponents
    and booleans; a price must be taken exactly as the client meant it or refused.
    A float from the JSON decoder goes through ``str()`` so that ``150.5`` becomes
    ``Decimal("150.5")`` rather than the binary float's long expansion.
    """

    default_error_messages = {  # noqa: RUF012 (marshmallow's own convention)
        "invalid": 'Not a valid decimal number: send a JSON number or a string such as "150.50".',
        "special": "Must be a finite number (NaN and Infinity are not allowed).",
        "not_positive": "Must be greater than 0.",
        "too_large": "Must be less than or equal to {max}.",
        "too_precise": "Must have at most {places} decimal places.",
    }

    def _deserialize(
        self,
        value: object,
        attr: str | None,
        data: Mapping[str, Any] | None,
        **kwargs: object,
    ) -> Decimal:
        """Parse then bound-check, in an order where each step is safe and exact."""
        price = self._parse(value)
        if not price.is_finite():
            raise self.make_error("special")
        if price <= 0:
            raise self.make_error("not_positive")
        # Bounded before quantizing: quantize raises on values wider than the context.
        if price > MAX_LIMIT_PRICE:
            raise self.make_error("too_large", max=MAX_LIMIT_PRICE)
        cents = price.quantize(_CENT)
        if cents != price:
            raise self.make_error("too_precise", places=LIMIT_PRICE_PLACES)
        return cents

    def _parse(self, value: object) -> Decimal:
        """Convert the JSON value to a ``Decimal`` without ever doing float arithmetic."""
        # bool is a subclass of int, so it must be turned away before the int branch.
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, Decimal):
            return value
        if isinstance(value, int):
            return Decimal(value)
        if isinstance(value, float):
            return Decimal(str(value))
        if isinstance(value, str) and _PLAIN_DECIMAL.fullmatch(value):
            return Decimal(value)
        raise self.make_error("invalid")


class OrderRequestSchema(Schema):
    """The JSON body of ``POST /orders``.

    ``load`` returns a plain dict with exactly the keys ``type``, ``side``,
    ``instrument``, ``quantity`` and ``limit_price`` (``None`` for market orders), or
    raises :exc:`~marshmallow.ValidationError` whose ``messages`` name every field at
    fault. Unknown fields are refused rather than dropped, so a client's typo (say
    ``limitprice``) fails loudly instead of silently placing a market order.
    """

    class Meta:
        """Refuse unknown fields (marshmallow's default, stated so it cannot drift)."""

        unknown = RAISE

    type = fields.String(required=True, validate=validate.OneOf(ORDER_TYPES))
    side = fields.String(required=True, validate=validate.OneOf(SIDES))
    instrument = fields.String(
        required=True, validate=validate.Regexp(INSTRUMENT_PATTERN, error=_INSTRUMENT_ERROR)
    )
    quantity = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0, min_inclusive=False, max=MAX_QUANTITY),
    )
    limit_price = _LimitPrice(
        load_default=None,
        allow_none=True,
        # For the OpenAPI document: the field's class has no JSON Schema type of its own.
        metadata={
            "description": "Required for limit orders; absent or null for market orders. Greater than 0, "
            f"at most {MAX_LIMIT_PRICE}, at most {LIMIT_PRICE_PLACES} decimal places.",
            "anyOf": [
                {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": float(MAX_LIMIT_PRICE)},
                {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "example": "150.50"},
            ],
        },
    )

    @validates_schema(skip_on_field_errors=False, pass_original=True)
    def _check_limit_price_against_type(
        self, data: Mapping[str, Any], original_data: Mapping[str, Any], **kwargs: object
    ) -> None:
        """Enforce that limit orders carry a price and market orders do not.

        Runs despite field errors so one response lists every fault. It is skipped when
        ``type`` is itself missing or invalid, since the rule would then be guesswork.
        The market check looks at the raw input so that even an invalid price (``0``)
        is reported as not allowed; the limit check looks at the loaded value, so a
        price that failed its own validation is not also reported as missing.
        """
        order_type = data.get("type")
        if order_type == "market" and original_data.get("limit_price") is not None:
            raise ValidationError(_LIMIT_PRICE_FORBIDDEN, "limit_price")
        if order_type == "limit" and "limit_price" in data and data["limit_price"] is None:
            raise ValidationError(_LIMIT_PRICE_REQUIRED, "limit_price")
