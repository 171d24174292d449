"""The API's error contract: one JSON shape for every 4xx and the mission's fixed body for 500.

Routes raise; these handlers translate, so no route formats an error of its own.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from orders_api.idempotency import (
    IdempotencyKeyInFlightError,
    IdempotencyKeyReusedError,
    InvalidIdempotencyKeyError,
)

logger = logging.getLogger(__name__)

#: The body of every 500, fixed to the letter by the service's contract with its clients.
INTERNAL_ERROR_BODY = {"message": "Internal server error while placing the order"}


class InvalidQueryError(Exception):
    """The query string is at fault; ``messages`` maps each parameter to what is wrong with it."""

    def __init__(self, messages: object) -> None:
        super().__init__("invalid query parameters")
        self.messages = messages


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on ``app``."""
    app.register_error_handler(ValidationError, _invalid_order)
    app.register_error_handler(InvalidQueryError, _invalid_query)
    app.register_error_handler(InvalidIdempotencyKeyError, _invalid_idempotency_key)
    app.register_error_handler(IdempotencyKeyReusedError, _idempotency_key_reused)
    app.register_error_handler(IdempotencyKeyInFlightError, _idempotency_key_in_flight)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)


def client_error(code: int, status: str, message: str, errors: object | None = None) -> tuple[Response, int]:
    """A 4xx response in the one shape clients can rely on."""
    body: dict[str, object] = {"code": code, "status": status, "message": message}
    if errors is not None:
        body["errors"] = errors
    return jsonify(body), code


def _invalid_order(error: ValidationError) -> tuple[Response, int]:
    return client_error(
        422,
        "Unprocessable Entity",
        "The order is invalid; see errors for each field at fault.",
        {"json": error.messages},
    )


def _invalid_query(error: InvalidQueryError) -> tuple[Response, int]:
    return client_error(
        422,
        "Unprocessable Entity",
        "The query parameters are invalid; see errors for each parameter at fault.",
        {"query": error.messages},
    )


def _invalid_idempotency_key(error: InvalidIdempotencyKeyError) -> tuple[Response, int]:
    return client_error(
        400,
        "Bad Request",
        "The Idempotency-Key header is invalid.",
        {"headers": {"Idempotency-Key": [str(error)]}},
    )


def _idempotency_key_reused(error: IdempotencyKeyReusedError) -> tuple[Response, int]:
    return client_error(
        422,
        "Unprocessable Entity",
        "This Idempotency-Key was already used with a different request; send a new key for a new order.",
    )


def _idempotency_key_in_flight(error: IdempotencyKeyInFlightError) -> tuple[Response, int]:
    logger.info("%s", error)
    response, code = client_error(
        409, "Conflict", "A request with this Idempotency-Key is still in progress; retry it shortly."
    )
    response.headers["Retry-After"] = "1"
    return response, code


def _http_error(error: HTTPException) -> tuple[Response, int]:
    code = error.code or 500
    if code >= 500:
        return _internal_error(error)
    response, code = client_error(code, error.name, error.description or error.name)
    # The headers the status calls for, such as a 405's Allow (RFC 9110), outlive the JSON body.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response, code


def _internal_error(error: Exception) -> tuple[Response, int]:
    logger.error("request failed: %s", error, exc_info=error)
    return jsonify(INTERNAL_ERROR_BODY), 500
