"""The ceiling of any Flask design here: an endpoint that parses a JSON body and answers a small JSON.

Served by gunicorn exactly as the API is (``gunicorn bench.bare_app:app``), it measures what
the machine gives Flask itself, with no validation, database or broker behind it. It echoes the
order's ``quantity`` so that the load script can time each answer as it does for ``POST /orders``.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify, request

app = Flask(__name__)


@app.post("/orders")
def accept() -> tuple[Response, int]:
    """Parse the body and answer at once: the least work any order endpoint must do."""
    body = request.get_json()
    return jsonify({"accepted": True, "quantity": body["quantity"]}), 201
