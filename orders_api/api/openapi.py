"""The API's OpenAPI document, generated with apispec from the marshmallow schemas.

The request body's component is generated from :class:`~orders_api.api.request_schemas.OrderRequestSchema`,
the very schema that validates it, and the answers' from :mod:`orders_api.api.response_schemas`;
the operations (parameters, status codes, headers) are written here, beside each other, because
the routes are plain Flask views that carry no such annotations.

The document is OpenAPI 3.0.3 rather than 3.1: the Swagger UI that ``/docs`` serves (4.15, from
the ``swagger-ui-bundle`` package) renders 3.0 only.

Another module documents a route of its own (say ``/metrics``) by calling
:func:`document_path` before the first request; the unit test fails while any Flask route is
undocumented, or any documented path is not served.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any, Final

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import fields, validate

from orders_api.api.list_query import OrderListQuerySchema
from orders_api.api.orders import IDEMPOTENCY_KEY_HEADER
from orders_api.api.request_schemas import OrderRequestSchema
from orders_api.api.response_schemas import (
    ErrorSchema,
    ExecutionSchema,
    InternalErrorSchema,
    LivenessSchema,
    OrderDetailSchema,
    OrderPageSchema,
    OrderSchema,
    ReadinessSchema,
)
from orders_api.idempotency import MAX_KEY_LENGTH

#: Version of the OpenAPI specification the document follows (the newest Swagger UI 4 renders).
OPENAPI_VERSION: Final = "3.0.3"
#: The optional header that names a request in the logs, sent back on every answer.
REQUEST_ID_HEADER: Final = "X-Request-ID"
#: The endpoints that serve the documentation itself, which the document leaves out.
DOCUMENTATION_ENDPOINTS: Final = frozenset({"openapi.document", "openapi.docs", "openapi.asset"})

Operations = Mapping[str, Mapping[str, Any]]

_EXTENSION: Final = "orders.openapi"
_JSON: Final = "application/json"
# Printable ASCII without spaces at either end, as orders_api.idempotency.validated_key accepts.
_IDEMPOTENCY_KEY_PATTERN: Final = r"^[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?$"

_DESCRIPTION: Final = """\
Places orders on the stock exchange. `POST /orders` answers `201` only once the order is committed
to the database **and** the broker has confirmed its placement request; workers then place it,
retrying while the exchange is unavailable. Follow the order with `GET /orders/{order_id}`.

Every 4xx has one shape (`Error`); every 500 has one fixed body (`InternalError`)."""


class ApiDocument:
    """The document of one app: the built-in paths plus those other modules add, built once."""

    def __init__(self) -> None:
        self._extra_paths: dict[str, Operations] = {}
        self._lock = threading.Lock()
        self._built: dict[str, Any] | None = None

    def add_path(self, path: str, operations: Operations) -> None:
        """Document ``operations`` (method -> OpenAPI operation) of ``path``, an OpenAPI path template."""
        with self._lock:
            if self._built is not None:
                raise RuntimeError(f"the OpenAPI document was already built; document {path} before serving")
            self._extra_paths[path] = operations

    def as_dict(self) -> dict[str, Any]:
        """The document, built on first use so that every module has added its paths by then."""
        with self._lock:
            if self._built is None:
                self._built = build_document(self._extra_paths)
            return self._built


def init_app(app: Flask) -> ApiDocument:
    """Give ``app`` its document; :mod:`orders_api.api.docs` serves it."""
    return api_document(app)


def api_document(app: Flask) -> ApiDocument:
    """The document of ``app``, made on first use: modules may document routes in any order."""
    document: ApiDocument = app.extensions.setdefault(_EXTENSION, ApiDocument())
    return document


def document_path(app: Flask, path: str, operations: Operations) -> None:
    """Document a route served by ``app`` outside this module's knowledge, such as ``/metrics``.

    ``path`` is an OpenAPI path template (``/things/{thing_id}``); each operation gets the
    optional ``X-Request-ID`` header like the built-in ones. Call it before the first request.
    """
    api_document(app).add_path(path, operations)


def build_document(extra_paths: Mapping[str, Operations] | None = None) -> dict[str, Any]:
    """The whole OpenAPI document as a JSON-ready dict."""
    marshmallow_plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Orders API",
        version=version("orders-service"),
        openapi_version=OPENAPI_VERSION,
        plugins=[marshmallow_plugin],
        info={"description": _DESCRIPTION},
    )
    converter = marshmallow_plugin.converter
    if converter is None:
        raise RuntimeError("apispec did not initialise the marshmallow plugin")
    # apispec's converter is untyped.
    converter.add_attribute_function(_portable_pattern)  # type: ignore[no-untyped-call]
    converter.add_attribute_function(_exclusive_bounds)  # type: ignore[no-untyped-call]
    _add_order_request(spec, converter.schema2jsonschema(OrderRequestSchema))  # type: ignore[no-untyped-call]
    spec.components.schema("Order", schema=OrderSchema)
    spec.components.schema("Execution", schema=ExecutionSchema)
    spec.components.schema("OrderDetail", schema=OrderDetailSchema)
    spec.components.schema("OrderPage", schema=OrderPageSchema)
    spec.components.schema("Error", schema=ErrorSchema)
    spec.components.schema("InternalError", schema=InternalErrorSchema)
    spec.components.schema("Liveness", schema=LivenessSchema)
    spec.components.schema("Readiness", schema=ReadinessSchema)
    spec.components.parameter(
        "RequestId",
        "header",
        {
            "name": REQUEST_ID_HEADER,
            "required": False,
            "description": "A name for this request in the service's logs; the answer carries it back "
            "(one is made up when the request has none).",
            "schema": {"type": "string"},
        },
    )
    spec.components.header(
        "RequestId",
        {"description": "The request's X-Request-ID, as sent or made up.", "schema": {"type": "string"}},
    )
    paths = {**_built_in_paths(), **(extra_paths or {})}
    for path, operations in paths.items():
        spec.path(path=path, operations=_with_request_id(operations))
    return spec.to_dict()


def _add_order_request(spec: APISpec, generated: dict[str, Any]) -> None:
    """``OrderRequest``: one of a market order and a limit order, both generated from the one schema.

    :class:`~orders_api.api.request_schemas.OrderRequestSchema` ties ``limit_price`` to ``type``
    in a ``validates_schema`` method, which no field's JSON Schema can say; split on ``type``, each
    variant says it, so that tools (and clients) generate orders the API accepts.
    """
    properties = generated["properties"]
    price = {
        key: value for key, value in properties["limit_price"].items() if key not in {"nullable", "default"}
    }
    market = copy.deepcopy(generated)
    market["properties"]["type"] = {**properties["type"], "enum": ["market"]}
    market["properties"]["limit_price"] = {
        "description": "Not allowed for market orders: omit it or send null.",
        "nullable": True,
        "enum": [None],
    }
    limit = copy.deepcopy(generated)
    limit["properties"]["type"] = {**properties["type"], "enum": ["limit"]}
    limit["properties"]["limit_price"] = price
    limit["required"] = sorted({*generated["required"], "limit_price"})
    spec.components.schema("MarketOrderRequest", component=market)
    spec.components.schema("LimitOrderRequest", component=limit)
    variants = {
        "market": "#/components/schemas/MarketOrderRequest",
        "limit": "#/components/schemas/LimitOrderRequest",
    }
    spec.components.schema(
        "OrderRequest",
        component={
            "oneOf": [{"$ref": ref} for ref in variants.values()],
            "discriminator": {"propertyName": "type", "mapping": variants},
        },
    )


def _built_in_paths() -> dict[str, Operations]:
    return {
        "/orders": {"post": _create_order(), "get": _list_orders()},
        "/orders/{order_id}": {"get": _show_order()},
        "/healthz": {"get": _liveness()},
        "/readyz": {"get": _readiness()},
    }


def _create_order() -> dict[str, Any]:
    return {
        "operationId": "createOrder",
        "tags": ["orders"],
        "summary": "Place an order",
        "description": "Answers `201` only once the order is committed and the broker has confirmed "
        "its placement request. With an `Idempotency-Key`, a repeat of the same request (same key, "
        "same body) answers `201` again with the same order as it stands now, placing nothing again.",
        "parameters": [
            {
                "in": "header",
                "name": IDEMPOTENCY_KEY_HEADER,
                "required": False,
                "description": "Makes the request safe to retry after a 500, a timeout or a lost "
                "connection: send the same key with the same body. A UUID is a good key. Keys are "
                "remembered for 24 hours and are global.",
                "schema": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": MAX_KEY_LENGTH,
                    "pattern": _IDEMPOTENCY_KEY_PATTERN,
                },
                "example": "0b6c5c0e-9a4f-4c0e-8f7e-2a1d3c4b5e6f",
            }
        ],
        "requestBody": {
            "required": True,
            "description": "One order, as a JSON object of at most 16 KiB. Unknown fields are refused "
            "rather than dropped, so that a typo fails loudly.",
            "content": {
                _JSON: {
                    "schema": "OrderRequest",
                    "examples": {
                        "limit": {
                            "summary": "A limit order",
                            "value": {
                                "type": "limit",
                                "side": "buy",
                                "instrument": "US0378331005",
                                "limit_price": 150.5,
                                "quantity": 10,
                            },
                        },
                        "market": {
                            "summary": "A market order",
                            "value": {
                                "type": "market",
                                "side": "sell",
                                "instrument": "DE0007164600",
                                "quantity": 3,
                            },
                        },
                    },
                }
            },
        },
        "responses": {
            "201": {
                "description": "Accepted: committed, and its placement request confirmed by the broker "
                "(also the answer to a repeat with the same Idempotency-Key and body).",
                "headers": {
                    "Location": {
                        "description": "Where to follow the order.",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "example": "/orders/6f1c2b9e-8d5c-4b1a-9f0e-3c2d1a0b9e8f",
                        },
                    }
                },
                "content": {_JSON: {"schema": "Order"}},
            },
            "400": _error(
                "The body is empty, not JSON, not UTF-8, nested too deeply or badly framed; or the "
                "Idempotency-Key header is invalid (then `errors.headers` says why)."
            ),
            "409": _error(
                "A request with this Idempotency-Key is still in progress; retry it shortly.",
                headers={
                    "Retry-After": {
                        "description": "Seconds to wait before retrying.",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                },
            ),
            "413": _error("The body is larger than 16 KiB."),
            "415": _error("The body is not `application/json`."),
            "422": _error(
                "The order is invalid (`errors.json` names every field at fault), or the "
                "Idempotency-Key was already used with a different body."
            ),
            "500": _internal_error(),
        },
    }


def _show_order() -> dict[str, Any]:
    return {
        "operationId": "getOrder",
        "tags": ["orders"],
        "summary": "Look up an order",
        "description": "The order, where it stands with the exchange, its fills and its executions.",
        "parameters": [
            {
                "in": "path",
                "name": "order_id",
                "required": True,
                "description": "The order's id, from its `201` (a malformed id is simply not found).",
                "schema": {"type": "string", "format": "uuid"},
            }
        ],
        "responses": {
            "200": {
                "description": "The order, with its executions.",
                "content": {_JSON: {"schema": "OrderDetail"}},
            },
            "404": _error("No order has this id, or it is not a UUID."),
            "500": _internal_error(),
        },
    }


def _list_orders() -> dict[str, Any]:
    return {
        "operationId": "listOrders",
        "tags": ["orders"],
        "summary": "List orders",
        "description": "Orders newest first, filtered by the parameters given, a page at a time: follow "
        "`next_cursor` (as `cursor`, with the same filters) until it is null. A page never repeats "
        "or skips an order of the pages before it. Unknown parameters are refused.",
        "parameters": [{"in": "query", "schema": OrderListQuerySchema}],
        "responses": {
            "200": {"description": "One page of orders.", "content": {_JSON: {"schema": "OrderPage"}}},
            "422": _error("A parameter is invalid or unknown; `errors.query` names each one at fault."),
            "500": _internal_error(),
        },
    }


def _liveness() -> dict[str, Any]:
    return {
        "operationId": "liveness",
        "tags": ["health"],
        "summary": "Liveness probe",
        "description": "`200` whenever the process answers; PostgreSQL and RabbitMQ are not asked, on "
        "purpose: restarting the API cannot cure their outage.",
        "responses": {
            "200": {"description": "The process answers.", "content": {_JSON: {"schema": "Liveness"}}}
        },
    }


def _readiness() -> dict[str, Any]:
    return {
        "operationId": "readiness",
        "tags": ["health"],
        "summary": "Readiness probe",
        "description": "Asks PostgreSQL and RabbitMQ, within about a second, through the pool and "
        "connection that requests use.",
        "responses": {
            "200": {
                "description": "Both answer: orders can be accepted.",
                "content": {_JSON: {"schema": "Readiness"}},
            },
            "503": {
                "description": "One of them does not answer; `checks` says which and why.",
                "content": {_JSON: {"schema": "Readiness"}},
            },
        },
    }


def _error(description: str, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {_JSON: {"schema": "Error"}}}
    if headers:
        response["headers"] = dict(headers)
    return response


def _internal_error() -> dict[str, Any]:
    return {
        "description": "Something failed on the service's side (database or broker down, no confirm "
        "in time) and the order was rolled back. The body is always the same. Retrying is safe with "
        "an Idempotency-Key (the same key and body).",
        "content": {_JSON: {"schema": "InternalError"}},
    }


def _with_request_id(operations: Operations) -> dict[str, dict[str, Any]]:
    """``operations`` with the optional ``X-Request-ID`` header on each request and each answer."""
    augmented = {method: copy.deepcopy(dict(operation)) for method, operation in operations.items()}
    for operation in augmented.values():
        operation.setdefault("parameters", []).append("RequestId")
        for response in operation.get("responses", {}).values():
            response.setdefault("headers", {})[REQUEST_ID_HEADER] = "RequestId"
    return augmented


def _portable_pattern(
    converter: object, field: fields.Field[Any], ret: dict[str, Any], **kwargs: object
) -> dict[str, Any]:
    r"""A ``Regexp`` validator's pattern in the dialect of JSON Schema (ECMA-262), not Python's.

    The schemas anchor with ``\A`` and ``\Z`` (``$`` would let a trailing newline through
    ``re.match``); ECMA-262 has neither, and there ``^`` and ``$`` already anchor at the ends.
    """
    pattern = ret.get("pattern")
    if not isinstance(pattern, str):
        return {}
    if pattern.startswith("\\A"):
        pattern = "^" + pattern[2:]
    if pattern.endswith("\\Z"):
        pattern = pattern[:-2] + "$"
    return {"pattern": pattern}


def _exclusive_bounds(
    converter: object, field: fields.Field[Any], ret: dict[str, Any], **kwargs: object
) -> dict[str, Any]:
    """A ``Range`` validator's exclusive bounds, which apispec writes as inclusive ones.

    ``Range(min=0, min_inclusive=False)`` would otherwise be documented as ``minimum: 0``,
    inviting a quantity of 0 that the API refuses.
    """
    bounds: dict[str, Any] = {}
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            if validator.min is not None and not validator.min_inclusive:
                bounds["exclusiveMinimum"] = True
            if validator.max is not None and not validator.max_inclusive:
                bounds["exclusiveMaximum"] = True
    return bounds
