"""/openapi.json is valid OpenAPI and documents exactly the routes Flask serves; /docs needs no internet."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from orders_api.api import docs, openapi
from orders_api.api.app import create_app
from orders_api.api.request_schemas import ORDER_TYPES, OrderRequestSchema
from orders_api.settings.shared import Settings

pytestmark = pytest.mark.unit

#: Methods Flask answers on every rule by itself; the document lists the ones the views implement.
IMPLICIT_METHODS = {"HEAD", "OPTIONS"}


@pytest.fixture
def app() -> Iterator[Flask]:
    """The real app; nothing connects until a request needs the database or the broker, and none here does."""
    app = create_app(Settings(), {"TESTING": True})
    yield app
    app.extensions["orders.publisher"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def served_document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    document = response.get_json()
    assert isinstance(document, dict)
    return document


def flask_operations(app: Flask) -> set[tuple[str, str]]:
    """(OpenAPI path template, method) of every route the app serves, but the documentation's own."""
    operations = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in openapi.DOCUMENTATION_ENDPOINTS:
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        operations |= {(path, method) for method in (rule.methods or set()) - IMPLICIT_METHODS}
    return operations


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in document["paths"].items() for method in item}


def test_served_document_is_valid_openapi_3(client: FlaskClient) -> None:
    document = served_document(client)

    validate(document)
    assert document["openapi"] == openapi.OPENAPI_VERSION


def test_every_route_flask_serves_is_documented_and_nothing_else(app: Flask, client: FlaskClient) -> None:
    served = flask_operations(app)

    assert documented_operations(served_document(client)) == served
    # The comparison means something only if it covers the routes known today.
    assert {
        ("/orders", "POST"),
        ("/orders/{order_id}", "GET"),
        ("/healthz", "GET"),
        ("/readyz", "GET"),
    } <= served


def test_documentation_endpoints_are_the_ones_left_out(app: Flask) -> None:
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}

    assert endpoints >= openapi.DOCUMENTATION_ENDPOINTS


def test_request_body_is_generated_from_the_schema_that_validates_it(client: FlaskClient) -> None:
    document = served_document(client)
    body = document["paths"]["/orders"]["post"]["requestBody"]["content"]["application/json"]
    components = document["components"]["schemas"]
    schema = OrderRequestSchema()
    required = {name for name, field in schema.fields.items() if field.required}

    assert body["schema"] == {"$ref": "#/components/schemas/OrderRequest"}
    variants = {
        name: components[ref.rsplit("/", 1)[-1]]
        for name, ref in components["OrderRequest"]["discriminator"]["mapping"].items()
    }
    assert set(variants) == set(ORDER_TYPES)
    for order_type, variant in variants.items():
        assert set(variant["properties"]) == set(schema.fields)
        assert variant["properties"]["type"]["enum"] == [order_type]
        assert variant["additionalProperties"] is False
    assert set(variants["market"]["required"]) == required
    assert set(variants["limit"]["required"]) == required | {"limit_price"}
    for example in body["examples"].values():
        schema.load(example["value"])


@pytest.mark.parametrize(
    ("path", "method", "codes"),
    [
        ("/orders", "post", {"201", "400", "409", "413", "415", "422", "500"}),
        ("/orders/{order_id}", "get", {"200", "404", "500"}),
        ("/healthz", "get", {"200"}),
        ("/readyz", "get", {"200", "503"}),
    ],
)
def test_each_operation_lists_the_status_codes_its_route_returns(
    client: FlaskClient, path: str, method: str, codes: set[str]
) -> None:
    assert set(served_document(client)["paths"][path][method]["responses"]) == codes


def test_every_4xx_has_the_error_shape_and_every_500_the_fixed_body(client: FlaskClient) -> None:
    document = served_document(client)
    for item in document["paths"].values():
        for operation in item.values():
            for code, response in operation["responses"].items():
                if code.startswith("4"):
                    assert (
                        response["content"]["application/json"]["schema"]["$ref"]
                        == "#/components/schemas/Error"
                    )
                if code == "500":
                    assert (
                        response["content"]["application/json"]["schema"]["$ref"]
                        == "#/components/schemas/InternalError"
                    )
    [fixed] = document["components"]["schemas"]["InternalError"]["properties"]["message"]["enum"]
    assert fixed == "Internal server error while placing the order"


def test_idempotency_key_and_request_id_headers_are_documented_as_optional(client: FlaskClient) -> None:
    document = served_document(client)
    create = document["paths"]["/orders"]["post"]
    [key] = [parameter for parameter in create["parameters"] if parameter.get("name") == "Idempotency-Key"]
    request_id = document["components"]["parameters"]["RequestId"]

    assert key["in"] == "header"
    assert key["required"] is False
    assert request_id == {**request_id, "in": "header", "name": "X-Request-ID", "required": False}
    for item in document["paths"].values():
        for operation in item.values():
            assert {"$ref": "#/components/parameters/RequestId"} in operation["parameters"]
            for response in operation["responses"].values():
                assert response["headers"]["X-Request-ID"] == {"$ref": "#/components/headers/RequestId"}


def test_a_route_documented_before_the_docs_are_registered_is_kept() -> None:
    app = Flask(__name__)
    app.add_url_rule("/metrics", "metrics", lambda: "")
    metrics = {
        "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "The metrics."}}}
    }

    openapi.document_path(app, "/metrics", metrics)
    docs.init_app(app)

    assert openapi.api_document(app).as_dict()["paths"]["/metrics"]["get"]["summary"] == "Prometheus metrics"


def test_another_module_documents_its_route_through_the_hook(app: Flask) -> None:
    metrics = {
        "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "The metrics."}}}
    }

    openapi.document_path(app, "/metrics", metrics)

    with app.test_client() as client:
        document = served_document(client)
    validate(document)
    assert document["paths"]["/metrics"]["get"]["summary"] == "Prometheus metrics"
    with pytest.raises(RuntimeError, match="already built"):
        openapi.document_path(app, "/later", metrics)


class _Links(HTMLParser):
    """Every URL a page loads or links to (src, href), and the text of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value is not None]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def test_docs_page_loads_only_files_the_app_serves_itself(client: FlaskClient) -> None:
    response = client.get("/docs")
    page = response.get_data(as_text=True)
    links = _Links()
    links.feed(page)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "http:" not in page
    assert "https:" not in page
    assert set(links.urls) == {f"/docs/assets/{name}" for name in docs.ASSETS}
    for url in links.urls:
        with client.get(url) as asset:
            assert asset.status_code == 200, url
            assert asset.content_length, url
    [script] = links.scripts
    assert 'url: "/openapi.json"' in script
    assert "validatorUrl: null" in script


@pytest.mark.parametrize("name", ["index.html", "swagger-initializer.js", "..%2Fapp.py", "missing.js"])
def test_only_the_assets_the_page_uses_are_served(client: FlaskClient, name: str) -> None:
    response = client.get(f"/docs/assets/{name}")

    assert response.status_code == 404
    assert response.get_json()["code"] == 404
