"""The shapes of the API's answers, as marshmallow schemas, for the OpenAPI document only.

The routes build their answers as plain dicts (:func:`orders_api.api.orders.order_representation`,
:func:`orders_api.api.errors.client_error`, the health probes); these schemas describe
those dicts so that :mod:`orders_api.api.openapi` can generate the document from
marshmallow, as it does for the request body. Nothing dumps through them, so they cannot
change an answer; the schemathesis test (``tests/e2e/test_api_conforms_to_its_document.py``)
checks every answer against them, so they cannot drift from the answers unnoticed either.
"""

from typing import Final

from marshmallow import Schema, fields, validate

from orders_api.api.errors import INTERNAL_ERROR_BODY
from orders_api.api.request_schemas import INSTRUMENT_PATTERN, MAX_QUANTITY, ORDER_TYPES, SIDES
from orders_api.domain import OrderStatus
from orders_api.executions import ExecutionKind, ExecutionStatus

#: A stored limit price as the API writes it: a decimal string with exactly two places.
PRICE_STRING_PATTERN: Final = r"^[0-9]{1,10}\.[0-9]{2}$"
#: A fill's price, or an average of them, as the API writes it: exactly four places.
FILL_PRICE_PATTERN: Final = r"^[0-9]{1,14}\.[0-9]{4}$"


class OrderSchema(Schema):
    """An order as ``POST /orders`` (``201``) and ``GET /orders/{order_id}`` (``200``) return it."""

    id = fields.UUID(required=True)
    created_at = fields.AwareDateTime(required=True, metadata={"description": "When it was accepted, UTC."})
    type = fields.String(required=True, validate=validate.OneOf(ORDER_TYPES))
    side = fields.String(required=True, validate=validate.OneOf(SIDES))
    instrument = fields.String(required=True, validate=validate.Regexp(INSTRUMENT_PATTERN))
    limit_price = fields.String(
        required=True,
        allow_none=True,
        validate=validate.Regexp(PRICE_STRING_PATTERN),
        metadata={
            "description": "A decimal string with two places, so that no digit is lost to floating "
            "point; null for a market order.",
            "example": "150.50",
        },
    )
    quantity = fields.Integer(required=True, validate=validate.Range(min=1, max=MAX_QUANTITY))
    status = fields.String(
        required=True,
        validate=validate.OneOf([status.value for status in OrderStatus]),
        metadata={
            "description": "pending until the exchange has it; placed once it does; failed once "
            "the service gave up on placing it (see last_error)."
        },
    )
    placed_at = fields.AwareDateTime(
        required=True, allow_none=True, metadata={"description": "When the exchange took it, UTC."}
    )
    attempts = fields.Integer(
        required=True, validate=validate.Range(min=0), metadata={"description": "Calls made to the exchange."}
    )
    last_error = fields.String(
        required=True, allow_none=True, metadata={"description": "Why the last attempt failed, if it did."}
    )
    filled_quantity = fields.Integer(
        required=True,
        validate=validate.Range(min=0),
        metadata={"description": "How much of the quantity the exchange has filled so far."},
    )
    average_price = fields.String(
        required=True,
        allow_none=True,
        validate=validate.Regexp(FILL_PRICE_PATTERN),
        metadata={
            "description": "The average price of the fills so far, rounded half-even to 4 places; "
            "null before the first fill.",
            "example": "150.2500",
        },
    )
    execution_status = fields.String(
        required=True,
        allow_none=True,
        validate=validate.OneOf([status.value for status in ExecutionStatus]),
        metadata={
            "description": "Where the order stands on the exchange, as its latest execution report "
            "says; null before the first report."
        },
    )


class ExecutionSchema(Schema):
    """One execution report of the exchange, as applied to its order."""

    exec_id = fields.String(required=True, metadata={"description": "The exchange's id of the report."})
    seq = fields.Integer(
        required=True, validate=validate.Range(min=1), metadata={"description": "Per order."}
    )
    kind = fields.String(required=True, validate=validate.OneOf([kind.value for kind in ExecutionKind]))
    quantity = fields.Integer(
        required=True, validate=validate.Range(min=0), metadata={"description": "Filled by it; 0 if no fill."}
    )
    price = fields.String(
        required=True,
        allow_none=True,
        validate=validate.Regexp(FILL_PRICE_PATTERN),
        metadata={"description": "The fill's price; null if no fill.", "example": "150.2500"},
    )
    reported_at = fields.AwareDateTime(
        required=True, metadata={"description": "When the exchange reported it."}
    )


class OrderDetailSchema(OrderSchema):
    """An order as ``GET /orders/{order_id}`` returns it: with its executions."""

    executions = fields.List(
        fields.Nested(ExecutionSchema),
        required=True,
        metadata={"description": "The execution reports applied to the order, by seq."},
    )


class OrderPageSchema(Schema):
    """``GET /orders``: a page of orders, newest first, and where the next page starts."""

    orders = fields.List(fields.Nested(OrderSchema), required=True)
    next_cursor = fields.String(
        required=True,
        allow_none=True,
        metadata={"description": "Send it as `cursor` for the next page; null on the last page."},
    )


class ErrorSchema(Schema):
    """The one shape of every 4xx (:func:`orders_api.api.errors.client_error`)."""

    code = fields.Integer(required=True, validate=validate.Range(min=400, max=499), metadata={"example": 422})
    status = fields.String(required=True, metadata={"example": "Unprocessable Entity"})
    message = fields.String(required=True)
    errors = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "Where the request is at fault: `json` maps each field of the body "
            "(`_schema` for the body as a whole) to its messages; `headers` each header."
        },
    )


class InternalErrorSchema(Schema):
    """The fixed body of every 500: the same text whatever failed, so nothing internal leaks."""

    message = fields.String(required=True, validate=validate.OneOf([INTERNAL_ERROR_BODY["message"]]))


class LivenessSchema(Schema):
    """``GET /healthz``: the process answers."""

    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadinessChecksSchema(Schema):
    """Each dependency's outcome: ``ok``, or why it does not count as answering."""

    postgresql = fields.String(required=True, metadata={"example": "ok"})
    rabbitmq = fields.String(required=True, metadata={"example": "ok"})


class ReadinessSchema(Schema):
    """``GET /readyz``: whether this process can accept orders now, and each dependency's outcome."""

    status = fields.String(required=True, validate=validate.OneOf(["ready", "unavailable"]))
    checks = fields.Nested(ReadinessChecksSchema, required=True)
