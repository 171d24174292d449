"""GET /healthz and GET /readyz against the real PostgreSQL and RabbitMQ, and against ones out of reach."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient

from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher
from orders_api.api.app import db
from orders_api.api.health import PROBE_TIMEOUT_S
from orders_api.settings.shared import Settings

pytestmark = pytest.mark.integration

#: Seconds a readiness answer may take beyond the probe's own bound (thread start, JSON, test client).
SLACK_S = 0.5


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where the kernel completes TCP handshakes and nobody ever says a word, like a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port: int = listener.getsockname()[1]
        yield port


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


#: Seconds a new publisher may take to connect and declare its queues (quorum queues are slower).
CONNECT_DEADLINE_S = 10.0


def timed_get(client: FlaskClient, path: str) -> tuple[int, object, float]:
    started = time.monotonic()
    response = client.get(path)
    return response.status_code, response.get_json(), time.monotonic() - started


def connect_publisher(client: FlaskClient) -> None:
    """Open the app's broker connection first, so a probe's second is spent on what the test is about.

    A new process declares its queues on connecting; a quorum queue's first declaration can
    take longer than a probe's second, and a real readiness probe would just ask again.
    """
    publisher: ConfirmedPublisher = client.application.extensions["orders.publisher"]
    assert publisher.wait_until_connected(CONNECT_DEADLINE_S), "the publisher did not connect to RabbitMQ"


def test_liveness_answers_ok_without_asking_any_dependency(
    client_for: Callable[[Settings], FlaskClient], closed_port: int
) -> None:
    client = client_for(
        Settings(
            database_url=f"postgresql://postgres@127.0.0.1:{closed_port}/orders",
            rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{closed_port}/%2F",
        )
    )

    status, body, _ = timed_get(client, "/healthz")

    assert (status, body) == (200, {"status": "ok"})


def test_a_new_process_becomes_ready_on_its_own_as_its_broker_connection_opens(client: FlaskClient) -> None:
    deadline = time.monotonic() + CONNECT_DEADLINE_S
    status, body, elapsed = timed_get(client, "/readyz")
    while status != 200 and time.monotonic() < deadline:
        assert elapsed < PROBE_TIMEOUT_S + SLACK_S
        status, body, elapsed = timed_get(client, "/readyz")

    assert (status, body) == (200, {"status": "ready", "checks": {"postgresql": "ok", "rabbitmq": "ok"}})


def test_ready_when_postgresql_and_rabbitmq_both_answer(client: FlaskClient) -> None:
    connect_publisher(client)

    status, body, elapsed = timed_get(client, "/readyz")

    assert (status, body) == (200, {"status": "ready", "checks": {"postgresql": "ok", "rabbitmq": "ok"}})
    assert elapsed < PROBE_TIMEOUT_S + SLACK_S


@pytest.mark.parametrize("broker", ["closed_port", "silent_port"])
def test_not_ready_within_a_second_when_rabbitmq_does_not_answer(
    broker: str,
    settings: Settings,
    client_for: Callable[[Settings], FlaskClient],
    request: pytest.FixtureRequest,
) -> None:
    port = request.getfixturevalue(broker)
    client = client_for(
        settings.model_copy(update={"rabbitmq_url": f"amqp://guest:guest@127.0.0.1:{port}/%2F"})
    )

    status, body, elapsed = timed_get(client, "/readyz")

    assert status == 503
    assert isinstance(body, dict)
    assert body["status"] == "unavailable"
    assert body["checks"]["postgresql"] == "ok"
    assert body["checks"]["rabbitmq"].startswith("unreachable: ")
    assert elapsed < PROBE_TIMEOUT_S + SLACK_S


@pytest.mark.parametrize("database", ["closed_port", "silent_port"])
def test_not_ready_within_a_second_when_postgresql_does_not_answer(
    database: str,
    settings: Settings,
    client_for: Callable[[Settings], FlaskClient],
    request: pytest.FixtureRequest,
) -> None:
    port = request.getfixturevalue(database)
    client = client_for(
        settings.model_copy(update={"database_url": f"postgresql://postgres@127.0.0.1:{port}/orders"})
    )
    connect_publisher(client)

    status, body, elapsed = timed_get(client, "/readyz")

    assert status == 503
    assert isinstance(body, dict)
    assert body["checks"]["rabbitmq"] == "ok"
    assert body["checks"]["postgresql"].startswith("unreachable: ")
    if database == "closed_port":
        assert "OperationalError" in body["checks"]["postgresql"], body
    assert elapsed < PROBE_TIMEOUT_S + SLACK_S


def test_an_exhausted_database_pool_makes_the_api_unready_within_a_second_then_ready_again(
    settings: Settings, client_for: Callable[[Settings], FlaskClient]
) -> None:
    # The pool waits DB_POOL_TIMEOUT_S (2 s) for a free connection; the probe must not.
    client = client_for(settings.model_copy(update={"db_pool_size": 1}))
    connect_publisher(client)
    with client.application.app_context():
        held = db.engine.connect()
    try:
        status, body, elapsed = timed_get(client, "/readyz")
    finally:
        held.close()

    assert status == 503
    assert body == {
        "status": "unavailable",
        "checks": {"postgresql": f"unreachable: no answer within {PROBE_TIMEOUT_S:g} s", "rabbitmq": "ok"},
    }
    assert elapsed < PROBE_TIMEOUT_S + SLACK_S

    # The probe still waiting for the pool gets the released connection; the next probe succeeds.
    status, body, _ = timed_get(client, "/readyz")
    assert status == 200, body
