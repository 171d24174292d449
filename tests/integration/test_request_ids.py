"""The request id over HTTP: echoed on every answer, and carried by each order's placement message."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin

pytestmark = pytest.mark.integration

LIMIT_ORDER = {
    "type": "limit",
    "side": "buy",
    "instrument": "US0378331005",
    "limit_price": "10.50",
    "quantity": 1,
}
#: Requests sent at once: enough that the group commit puts several requests' orders in a batch.
CONCURRENT_REQUESTS = 12


def placement_request_ids(rabbit: RabbitAdmin, settings: Settings) -> dict[str, str | None]:
    """The request id each placement message waiting in the queue carries, by order id."""
    return {
        body["args"][0]: body["options"].get("request_id")
        for body in rabbit.peek_bodies(settings.placement_queue)
    }


@pytest.mark.parametrize("keyed", [False, True], ids=["group-commit", "idempotency-key"])
def test_a_sane_request_id_is_echoed_and_travels_in_the_placement_message(
    keyed: bool, client: FlaskClient, rabbit: RabbitAdmin, settings: Settings
) -> None:
    request_id = f"client-{uuid.uuid4()}"
    headers = {"X-Request-ID": request_id}
    if keyed:
        headers["Idempotency-Key"] = str(uuid.uuid4())

    response = client.post("/orders", json=LIMIT_ORDER, headers=headers)

    assert response.status_code == 201
    assert response.headers["X-Request-ID"] == request_id
    assert placement_request_ids(rabbit, settings) == {response.get_json()["id"]: request_id}


def test_orders_committed_together_each_carry_their_own_requests_id(
    client_for: Callable[[Settings], FlaskClient], rabbit: RabbitAdmin, settings: Settings
) -> None:
    app_client = client_for(settings)
    app = app_client.application
    answers: dict[str, str] = {}
    start = threading.Barrier(CONCURRENT_REQUESTS)

    def post(index: int) -> None:
        request_id = f"batch-{index}-{uuid.uuid4().hex[:8]}"
        start.wait()
        response = app.test_client().post("/orders", json=LIMIT_ORDER, headers={"X-Request-ID": request_id})
        assert response.headers["X-Request-ID"] == request_id
        answers[response.get_json()["id"]] = request_id

    threads = [threading.Thread(target=post, args=(index,)) for index in range(CONCURRENT_REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(answers) == CONCURRENT_REQUESTS
    assert placement_request_ids(rabbit, settings) == answers


@pytest.mark.parametrize(
    ("header", "kept"),
    [("ok-id.1", True), ("has space", False), ("x" * 129, False), (None, False)],
    ids=["sane", "space", "too-long", "missing"],
)
def test_every_answer_carries_a_request_id_made_anew_when_the_clients_is_unsafe(
    header: str | None, kept: bool, client: FlaskClient
) -> None:
    headers = {} if header is None else {"X-Request-ID": header}

    not_found = client.get(f"/orders/{uuid.uuid4()}", headers=headers)
    invalid = client.post("/orders", json={"type": "limit"}, headers=headers)

    assert (not_found.status_code, invalid.status_code) == (404, 422)
    for response in (not_found, invalid):
        if kept:
            assert response.headers["X-Request-ID"] == header
        else:
            assert uuid.UUID(response.headers["X-Request-ID"]).version == 4


def test_a_500_carries_the_request_id_too(
    client: FlaskClient, rabbit: RabbitAdmin, settings: Settings
) -> None:
    assert client.post("/orders", json=LIMIT_ORDER).status_code == 201  # declares the queue
    rabbit.reject_publishes_to(settings.placement_queue)

    response = client.post("/orders", json=LIMIT_ORDER, headers={"X-Request-ID": "will-fail-1"})

    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "will-fail-1"
