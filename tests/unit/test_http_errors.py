"""Errors werkzeug raises keep the headers their status calls for under the JSON error body."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from orders_api.api.app import create_app
from orders_api.settings.shared import Settings

pytestmark = pytest.mark.unit


@pytest.fixture
def client() -> Iterator[FlaskClient]:
    """The real app; the requests below are refused before anything would connect."""
    app = create_app(Settings(), {"TESTING": True})
    yield app.test_client()
    app.extensions["orders.publisher"].close()


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/orders", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("TRACE", "/orders/6f1c2b9e-8d5c-4b1a-9f0e-3c2d1a0b9e8f", {"GET", "HEAD", "OPTIONS"}),
        ("DELETE", "/healthz", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_method_not_allowed_is_a_json_405_with_the_allow_header(
    client: FlaskClient, method: str, path: str, allowed: set[str]
) -> None:
    response = client.open(path, method=method)

    assert response.status_code == 405
    assert response.get_json()["code"] == 405
    assert response.mimetype == "application/json"
    assert {name.strip() for name in response.headers["Allow"].split(",")} == allowed
