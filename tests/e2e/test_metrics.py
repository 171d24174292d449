"""Prometheus metrics of real processes: the API's ``GET /metrics`` over two web workers, and the workers'.

The API's counts must add up over both web workers whichever of them answers the scrape (the
multiprocess files), the workers' placements must be counted with their creation-to-placed times
in the same scrape as Dramatiq's own metrics, and the on-call gauges must show a pending order's
age and a dead letter.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import dramatiq
import pika
import psycopg2
import pytest
import requests
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from orders_api.adapters.rabbitmq.placement_queue import PLACE_ORDER_ACTOR
from orders_api.settings.shared import Settings
from orders_testkit.processes import RunningService
from tests.e2e.test_order_flow_end_to_end import order_requests
from tests.prometheus_samples import Samples, parse_samples

pytestmark = pytest.mark.e2e

#: Orders posted per round, each on a connection of its own, from as many threads at once.
ROUND_SIZE = 8
#: Rounds at most until both gunicorn workers have answered some of the POSTs.
MAX_ROUNDS = 10
#: Seconds for every order to be placed, and for a metric to show what is expected.
DEADLINE_S = 60.0
#: Seconds one request may take.
REQUEST_TIMEOUT_S = 10

_T = TypeVar("_T")


def test_api_metrics_add_up_over_both_gunicorn_workers_and_workers_count_placements(
    service: RunningService, settings: Settings, tmp_path: Path
) -> None:
    api_metrics_dir = tmp_path / "api-metrics"
    posted: list[str] = []
    # Fresh connections, several at once, until both web workers have served POSTs: the
    # scrape must then add up requests counted in two processes.
    for _ in range(MAX_ROUNDS):
        posted += _post_orders(service.base_url, ROUND_SIZE)
        if len(_posts_by_worker(api_metrics_dir)) >= 2:
            break
    by_worker = _posts_by_worker(api_metrics_dir)
    assert len(by_worker) >= 2, f"every POST was served by one web worker: {by_worker}"
    assert sum(by_worker.values()) == len(posted)
    with requests.Session() as session:
        response = session.get(f"{service.base_url}/orders/{posted[0]}", timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 200

        # Whichever web worker answers each scrape, it reports the requests of both.
        for _ in range(6):
            api = _scrape(session, f"{service.base_url}/metrics")
            assert _value(
                api, "flask_http_request_duration_seconds_count", method="POST", status="201"
            ) == len(posted)
            assert (
                _value(
                    api,
                    "flask_http_request_duration_seconds_count",
                    method="GET",
                    route="/orders/<order_id>",
                    status="200",
                )
                == 1
            )
    routes = {dict(labels).get("route") for (name, labels) in api if name.startswith("flask_http_request")}
    assert routes <= {"/orders", "/orders/<order_id>", None}, f"raw paths in route labels: {routes}"
    # Every order went through the group commit, which published each batch with one confirm wait.
    assert _value(api, "orders_group_commit_batch_size_sum") == len(posted)
    batches = _value(api, "orders_group_commit_batch_size_count")
    assert 1 <= batches <= len(posted)
    assert _value(api, "orders_publish_confirm_seconds_count") == batches
    assert _value(api, "orders_publish_failures_total") == 0

    # A web worker that dies takes none of its counts with it: its files stay in the directory.
    os.kill(int(next(iter(by_worker))), signal.SIGKILL)
    _eventually(
        lambda: service.api_log.read_text(errors="replace").count("Booting worker with pid") > 2 or None,
        "gunicorn to replace the killed web worker",
    )
    with requests.Session() as session:
        for _ in range(6):
            api = _scrape(session, f"{service.base_url}/metrics")
            assert _value(
                api, "flask_http_request_duration_seconds_count", method="POST", status="201"
            ) == len(posted)

    _wait_until_placed(settings, posted)
    with requests.Session() as session:
        workers = _eventually(
            lambda: _placements_counted(session, service.worker_metrics_url, len(posted)),
            "the workers' scrape to count every placement",
        )
    assert _value(workers, "orders_created_to_placed_seconds_count") == len(posted)
    assert 0 < _value(workers, "orders_created_to_placed_seconds_sum") < DEADLINE_S * len(posted)
    # Dramatiq's own metrics come in the same scrape.
    assert _value(workers, "dramatiq_messages_total", actor_name=PLACE_ORDER_ACTOR) >= len(posted)
    assert _value(workers, "orders_exchange_breaker_open") == 0


def test_on_call_gauges_show_a_pending_orders_age_and_a_dead_letter(
    service: RunningService, settings: Settings
) -> None:
    with closing(psycopg2.connect(settings.database_url)) as database, _old_pending_order(database):
        _publish_poison_message(settings)
        with requests.Session() as session:
            api = _eventually(
                lambda: _dead_letter_shown(session, f"{service.base_url}/metrics"),
                "the API's scrape to show the dead letter",
            )
            workers = _eventually(
                lambda: _given_up_counted(session, service.worker_metrics_url),
                "the workers' scrape to count the message given up",
            )
    one_day_s = 24 * 3600.0
    age = _value(api, "orders_oldest_pending_order_age_seconds")
    assert one_day_s <= age < one_day_s + 3600, age
    assert _value(api, "orders_on_call_gauge_up", gauge="orders_oldest_pending_order_age_seconds") == 1
    assert _value(api, "orders_on_call_gauge_age_seconds", gauge="orders_dead_letter_queue_messages") < 60
    assert _value(workers, "orders_dead_letters_total", error="UnloadableOrderError") == 1
    assert _value(workers, "dramatiq_message_errors_total", actor_name=PLACE_ORDER_ACTOR) >= 1


def _post_orders(base_url: str, count: int) -> list[str]:
    """POST ``count`` orders at once, each on a new connection; their ids."""

    def post(order: dict[str, Any]) -> str:
        response = requests.post(f"{base_url}/orders", json=order, timeout=REQUEST_TIMEOUT_S)
        assert response.status_code == 201, response.text
        order_id: str = response.json()["id"]
        return order_id

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(post, order_requests(count)))


def _posts_by_worker(metrics_dir: Path) -> dict[str, float]:
    """POSTs answered 201 by each web worker, read from its own metric files alone."""
    counts: dict[str, float] = {}
    pids = {
        match.group(1) for path in metrics_dir.glob("*.db") if (match := re.search(r"_(\d+)\.db$", path.name))
    }
    for pid in pids:
        alone = metrics_dir.parent / f"alone-{pid}"
        alone.mkdir(exist_ok=True)
        for path in metrics_dir.glob(f"*_{pid}.db"):
            shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
        samples = parse_samples(generate_latest(registry).decode())
        posts = _value(
            samples, "flask_http_request_duration_seconds_count", missing=0.0, method="POST", status="201"
        )
        if posts:
            counts[pid] = posts
        shutil.rmtree(alone)
    return counts


def _wait_until_placed(settings: Settings, order_ids: list[str]) -> None:
    with closing(psycopg2.connect(settings.database_url)) as database:
        database.autocommit = True

        def all_placed() -> bool:
            with database.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM orders WHERE id = ANY(%s::uuid[]) AND status = 'placed'",
                    (order_ids,),
                )
                row = cursor.fetchone()
            return row is not None and row[0] == len(order_ids)

        _eventually(lambda: all_placed() or None, "every order placed")


def _placements_counted(session: requests.Session, url: str, expected: int) -> Samples | None:
    samples = _scrape_if_up(session, url)
    if (
        samples is None
        or _value(samples, "orders_placements_total", missing=0.0, outcome="placed") != expected
    ):
        return None
    return samples


def _dead_letter_shown(session: requests.Session, url: str) -> Samples | None:
    samples = _scrape(session, url)
    return samples if _value(samples, "orders_dead_letter_queue_messages", missing=0.0) == 1 else None


def _given_up_counted(session: requests.Session, url: str) -> Samples | None:
    samples = _scrape_if_up(session, url)
    if samples is None or not _value(samples, "orders_dead_letters_total", missing=0.0):
        return None
    return samples


@contextmanager
def _old_pending_order(database: psycopg2.extensions.connection) -> Iterator[str]:
    """A pending order created a day ago, with no message: deleted afterwards, so no other test meets it."""
    order_id = str(uuid.uuid4())
    database.autocommit = True
    with database.cursor() as cursor:
        cursor.execute(
            "INSERT INTO orders (id, created_at, type, side, instrument, quantity, status, attempts,"
            " abandoned_claims) VALUES (%s, now() - interval '1 day', 'market', 'buy', 'US0378331005',"
            " 1, 'pending', 0, 0)",
            (order_id,),
        )
    try:
        yield order_id
    finally:
        with database.cursor() as cursor:
            cursor.execute("DELETE FROM orders WHERE id = %s", (order_id,))


def _publish_poison_message(settings: Settings) -> None:
    """A ``place_order`` message whose argument is no order id: no retry can help, it is dead-lettered."""
    message: dramatiq.Message[None] = dramatiq.Message(
        queue_name=settings.placement_queue,
        actor_name=PLACE_ORDER_ACTOR,
        args=("not-an-order-id",),
        kwargs={},
        options={},
    )
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            exchange="",
            routing_key=settings.placement_queue,
            body=message.encode(),
            properties=pika.BasicProperties(delivery_mode=2, message_id=message.message_id),
            mandatory=True,
        )
    finally:
        connection.close()


def _scrape(session: requests.Session, url: str) -> Samples:
    response = session.get(url, timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain")
    return parse_samples(response.text)


def _scrape_if_up(session: requests.Session, url: str) -> Samples | None:
    """The scrape, or ``None`` while Dramatiq's exposition server is not listening yet."""
    try:
        return _scrape(session, url)
    except requests.ConnectionError:
        return None


def _value(samples: Samples, name: str, missing: float | None = None, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``; NaN stays NaN.

    With no such sample: ``missing`` if given, else the test fails.
    """
    wanted = set(labels.items())
    values = [value for (sample, have), value in samples.items() if sample == name and wanted <= have]
    if not values and missing is not None:
        return missing
    assert values, f"no sample {name}{labels or ''}"
    return math.fsum(values)


def _eventually(check: Callable[[], _T | None], what: str) -> _T:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        outcome = check()
        if outcome is not None and outcome is not False:
            return outcome
        time.sleep(0.25)
    pytest.fail(f"timed out after {DEADLINE_S:.0f} s waiting for {what}")
