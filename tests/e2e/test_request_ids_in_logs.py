"""JSON logs with a request id, through real gunicorn and dramatiq: one id finds an order's lines in both.

Orders are posted at once, each with an ``X-Request-ID`` of its own, so that the group commit
publishes several requests' orders together; each order's exchange call in the workers' log
must still carry its own request's id. Once both processes have stopped (so their shutdown
lines are in too), every line of both logs must be a JSON object with the common fields.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
import requests

from orders_testkit.json_logs import records
from orders_testkit.processes import RunningService
from tests.e2e.test_order_flow_end_to_end import in_parallel, order_requests

pytestmark = pytest.mark.e2e

#: Orders posted at once, each with its own request id.
ORDER_COUNT = 16
#: Seconds for every order's exchange call to reach the workers' log.
LOGGED_DEADLINE_S = 60.0
#: Fields every line of every process has.
COMMON_FIELDS = {"timestamp", "level", "logger", "message", "process"}
#: The lines that show the processes' shutdown went through the JSON formatter too.
GUNICORN_TERM_LINE = "Handling signal: term"
DRAMATIQ_STOPPING_LINE = "Stopping worker process..."


def post_with_request_id(base_url: str) -> Any:
    def post(session: requests.Session, request: tuple[str, dict[str, Any]]) -> tuple[str, requests.Response]:
        request_id, order = request
        response = session.post(
            f"{base_url}/orders", json=order, headers={"X-Request-ID": request_id}, timeout=10
        )
        return request_id, response

    return post


def calls_logged(service: RunningService, order_ids: set[str]) -> dict[str, dict[str, Any]]:
    """The workers' ``exchange call for order`` line of each order, once every order has one."""
    deadline = time.monotonic() + LOGGED_DEADLINE_S
    while True:
        found = {
            line["message"].removeprefix("exchange call for order "): line
            for line in records(service.worker_log.read_text(encoding="utf-8"))
            if line["message"].startswith("exchange call for order ")
        }
        if order_ids <= found.keys() or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_each_orders_request_id_is_echoed_and_found_in_the_api_and_worker_logs_all_json(
    service: RunningService,
) -> None:
    sent = [
        (f"e2e-{index}-{uuid.uuid4().hex[:12]}", order)
        for index, order in enumerate(order_requests(ORDER_COUNT))
    ]

    answers = in_parallel(post_with_request_id(service.base_url), sent)

    assert [response.status_code for _, response in answers] == [201] * ORDER_COUNT
    assert [response.headers.get("X-Request-ID") for _, response in answers] == [rid for rid, _ in sent]
    request_of = {response.json()["id"]: request_id for request_id, response in answers}
    calls = calls_logged(service, set(request_of))
    assert {order_id: calls[order_id].get("request_id") for order_id in request_of} == request_of
    assert all(calls[order_id]["logger"] == "workers.bootstrap" for order_id in request_of)

    assert service.stop() == []
    api_lines = records(service.api_log.read_text(encoding="utf-8"))  # fails on any line not JSON
    worker_lines = records(service.worker_log.read_text(encoding="utf-8"))
    access = {
        line["request_id"]: line
        for line in api_lines
        if line["logger"] == "gunicorn.access" and "request_id" in line
    }
    for request_id, _ in sent:
        line = access[request_id]
        assert (line["method"], line["path"], line["status"], line["remote"]) == (
            "POST",
            "/orders",
            201,
            "127.0.0.1",
        )
        assert isinstance(line["duration_ms"], float)
    for line in api_lines + worker_lines:
        assert line.keys() >= COMMON_FIELDS, line
        assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0), line
    assert GUNICORN_TERM_LINE in [line["message"] for line in api_lines]
    assert DRAMATIQ_STOPPING_LINE in [line["message"] for line in worker_lines]
    dramatiq_main = [line for line in worker_lines if line["logger"] == "dramatiq.MainProcess"]
    assert dramatiq_main, "the dramatiq CLI's main process logged no JSON line"
