"""``GET /metrics`` of an app in this process: requests by route, the on-call gauges, and their bounds.

Without ``PROMETHEUS_MULTIPROC_DIR`` the app reports its own registry; the multiprocess sum over
gunicorn's workers is checked end to end in tests/e2e/test_metrics.py.
"""

from __future__ import annotations

import math
import socket
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from flask.testing import FlaskClient

from orders_api.api.on_call_gauges import WAIT_S
from orders_api.settings.shared import Settings
from tests.prometheus_samples import Samples, parse_samples

pytestmark = pytest.mark.integration

#: Seconds a scrape may take beyond the readings' wait (thread start, rendering, test client).
SLACK_S = 0.5

ORDER = {"type": "market", "side": "buy", "instrument": "US0378331005", "quantity": 5}


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port where the kernel completes TCP handshakes and nobody ever says a word, like a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        port: int = listener.getsockname()[1]
        yield port


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_samples(response.get_data(as_text=True))


def test_requests_are_counted_by_route_and_status_and_scrapes_are_not(client: FlaskClient) -> None:
    created = client.post("/orders", json=ORDER)
    assert created.status_code == 201
    assert client.get(f"/orders/{created.get_json()['id']}").status_code == 200
    assert client.get(f"/orders/{uuid.uuid4()}").status_code == 404
    assert client.get("/no-such-route").status_code == 404
    scrape(client)

    samples = scrape(client)

    def requests(method: str, route: str, status: str) -> float | None:
        labels = frozenset({"method": method, "route": route, "status": status}.items())
        return samples.get(("flask_http_request_duration_seconds_count", labels))

    assert requests("POST", "/orders", "201") == 1
    assert requests("GET", "/orders/<order_id>", "200") == 1
    assert requests("GET", "/orders/<order_id>", "404") == 1
    assert requests("GET", "unmatched", "404") == 1
    routes = {dict(labels).get("route") for name, labels in samples if name.startswith("flask_http")}
    assert "/metrics" not in routes
    assert samples[("orders_group_commit_batch_size_sum", frozenset())] == 1
    assert samples[("orders_publish_confirm_seconds_count", frozenset())] == 1
    assert samples[("orders_dead_letter_queue_messages", frozenset())] == 0


def test_a_scrape_answers_in_time_with_unknown_gauges_while_both_dependencies_hang(
    settings: Settings, client_for: Callable[[Settings], FlaskClient], silent_port: int
) -> None:
    client = client_for(
        settings.model_copy(
            update={
                "database_url": f"postgresql://postgres@127.0.0.1:{silent_port}/orders",
                "rabbitmq_url": f"amqp://guest:guest@127.0.0.1:{silent_port}/%2F",
            }
        )
    )

    started = time.monotonic()
    samples = scrape(client)
    elapsed = time.monotonic() - started

    assert elapsed < WAIT_S + SLACK_S
    for gauge in ("orders_oldest_pending_order_age_seconds", "orders_dead_letter_queue_messages"):
        assert math.isnan(samples[(gauge, frozenset())])
        assert samples[("orders_on_call_gauge_up", frozenset({("gauge", gauge)}))] == 0
