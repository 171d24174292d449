"""The ``/orders`` resource: HTTP in, a service call, HTTP out, and nothing more."""

from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for
from marshmallow import ValidationError
from werkzeug.exceptions import BadRequest, NotFound

from orders_api import request_ids
from orders_api.api.errors import InvalidQueryError
from orders_api.api.list_query import OrderListQuerySchema, encode_cursor
from orders_api.api.request_body import read_body
from orders_api.api.request_schemas import OrderRequestSchema
from orders_api.api.services import IntakeItem, OrderServices
from orders_api.domain import Order, OrderType, Side
from orders_api.executions import ExecutionReport
from orders_api.idempotency import IdempotentRequest, request_fingerprint, validated_key
from orders_api.listing import OrderListing
from orders_api.service_layer.order_queries import get_order_detail, list_orders
from orders_api.service_layer.ordering import SubmitOrder, new_order, submit_order

blueprint = Blueprint("orders", __name__, url_prefix="/orders")

_request_schema = OrderRequestSchema()
_list_query_schema = OrderListQuerySchema()

#: The optional request header that makes ``POST /orders`` safe to retry.
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"


@blueprint.post("")
def create_order() -> tuple[Response, int, dict[str, str]]:
    """Accept an order: ``201`` only once it is committed and its placement is confirmed by the broker.

    Without an ``Idempotency-Key`` the order is committed together with the others in flight in
    this process (group commit). A repeat with the same ``Idempotency-Key`` and body gets the
    same order and answer again; such requests keep a transaction of their own, as the key is
    claimed inside it.
    """
    key = _idempotency_key()
    body = _json_body()
    fields = _request_schema.load(body)
    command = SubmitOrder(
        type=OrderType(fields["type"]),
        side=Side(fields["side"]),
        instrument=fields["instrument"],
        limit_price=fields["limit_price"],
        quantity=fields["quantity"],
    )
    services = _services()
    if key is None:
        order = new_order(command)
        services.intake.submit(IntakeItem(order, request_ids.current()))
    else:
        idempotency = IdempotentRequest(key, request_fingerprint(body))
        order = submit_order(command, services.unit_of_work(), services.placements, idempotency=idempotency)
    location = url_for("orders.show_order", order_id=order.id)
    return jsonify(order_representation(order)), 201, {"Location": location}


@blueprint.get("")
def index_orders() -> Response:
    """A page of orders, newest first, filtered as the query asks; ``422`` for a parameter at fault."""
    try:
        listing: OrderListing = _list_query_schema.load(request.args)
    except ValidationError as error:
        raise InvalidQueryError(error.messages) from None
    page = list_orders(listing, _services().unit_of_work())
    return jsonify(
        {
            "orders": [order_representation(order) for order in page.orders],
            "next_cursor": None if page.next is None else encode_cursor(page.next),
        }
    )


@blueprint.get("/<order_id>")
def show_order(order_id: str) -> Response:
    """The order, where it stands with the exchange, and its executions; ``404`` for an unknown id."""
    try:
        parsed = uuid.UUID(order_id)
    except ValueError:
        raise NotFound(f"No order with id {order_id!r}.") from None
    detail = get_order_detail(parsed, _services().unit_of_work())
    if detail is None:
        raise NotFound(f"No order with id {order_id!r}.")
    return jsonify(order_representation(detail.order, detail.executions))


def order_representation(order: Order, executions: list[ExecutionReport] | None = None) -> dict[str, Any]:
    """The order as clients see it; prices are decimal strings so that no digit is lost to floats.

    ``executions`` are listed only where they were read (one order's page): the list of orders
    shows each order's totals without them.
    """
    average_price = order.execution.average_price
    representation: dict[str, Any] = {
        "id": str(order.id),
        "created_at": order.created_at.astimezone(UTC).isoformat(),
        "type": order.type.value,
        "side": order.side.value,
        "instrument": order.instrument,
        "limit_price": None if order.limit_price is None else f"{order.limit_price:.2f}",
        "quantity": order.quantity,
        "status": order.status.value,
        "placed_at": None if order.placed_at is None else order.placed_at.astimezone(UTC).isoformat(),
        "attempts": order.attempts,
        "last_error": order.last_error,
        "filled_quantity": order.execution.filled_quantity,
        "average_price": None if average_price is None else f"{average_price:.4f}",
        "execution_status": None if order.execution.status is None else order.execution.status.value,
    }
    if executions is not None:
        representation["executions"] = [_execution_representation(report) for report in executions]
    return representation


def _execution_representation(report: ExecutionReport) -> dict[str, Any]:
    return {
        "exec_id": report.exec_id,
        "seq": report.seq,
        "kind": report.kind.value,
        "quantity": report.quantity,
        "price": None if report.price is None else f"{report.price:.4f}",
        "reported_at": report.reported_at.astimezone(UTC).isoformat(),
    }


def _json_body() -> dict[str, Any]:
    """The body as a JSON object.

    A non-JSON content type gives 415 (from Flask); a body cut short or badly framed, not UTF-8
    (RFC 8259) or not JSON 400; and valid JSON that is not an object 422 like any other invalid
    order. UTF-8 is checked strictly first: Python's JSON decoder would also take UTF-16, UTF-32
    and UTF-8-encoded lone surrogates.
    """
    if request.is_json:
        try:
            read_body().decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("The body is not valid UTF-8.") from None
    try:
        body = request.get_json()
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.") from None
    except BadRequest:
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ValidationError({"_schema": ["The body must be a JSON object describing one order."]})
    return body


def _idempotency_key() -> str | None:
    """The request's valid ``Idempotency-Key``, or ``None`` without one; an invalid key is a 400."""
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    return None if key is None else validated_key(key)


def _services() -> OrderServices:
    services: OrderServices = current_app.extensions["orders"]
    return services
