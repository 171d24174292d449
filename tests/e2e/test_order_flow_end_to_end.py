"""Orders go in over HTTP and come out placed on the exchange, once each, through real processes.

Runs gunicorn and dramatiq as ``make run`` does, against the real stock exchange stand-in
(slow, and unavailable one call in ten), and checks what clients see (responses, then each
order's status) against what the workers did (their log of exchange calls).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import psycopg2
import pytest
import requests
from psycopg2.extensions import connection

from orders_api.settings.shared import Settings
from orders_testkit.json_logs import read_messages
from orders_testkit.processes import RunningService

pytestmark = pytest.mark.e2e

#: Orders posted by the load test.
ORDER_COUNT = 200
#: Client threads posting them at once, each with a session of its own.
CLIENT_THREADS = 32
#: Seconds one request may take.
REQUEST_TIMEOUT_S = 10
#: Seconds, from the first POST, within which every order must be placed.
PLACEMENT_DEADLINE_S = 90.0
#: Seconds the workers' log may lag behind the database once every order is placed.
LOG_FLUSH_DEADLINE_S = 10.0
#: Seconds between two looks at the database.
POLL_INTERVAL_S = 0.2

#: Real ISINs: the schema checks their shape only.
INSTRUMENTS = ("US0378331005", "US5949181045", "DE0007164600", "GB0002634946", "NL0010273215")

_CALL_LINE = re.compile(r"exchange call for order ([0-9a-f-]{36})")
_PLACED_LINE = re.compile(r"exchange placed order ([0-9a-f-]{36})")

_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class Posted:
    """One POST /orders: what was sent and what came back."""

    sent: dict[str, Any]
    status_code: int
    location: str | None
    body: Any


def order_requests(count: int) -> list[dict[str, Any]]:
    """``count`` valid orders: market and limit, buy and sell, distinct quantities.

    Limit prices come in every form a client may send: a decimal string, an integer, and a
    float whose shortest form has one or two decimal places (``150.5`` must read as 150.50).
    """
    orders: list[dict[str, Any]] = []
    for index in range(count):
        order: dict[str, Any] = {
            "type": "limit" if index % 2 else "market",
            "side": "sell" if index % 4 >= 2 else "buy",
            "instrument": INSTRUMENTS[index % len(INSTRUMENTS)],
            "quantity": 1 + 7 * index,
        }
        if order["type"] == "limit":
            whole, cents = 100 + index, (index * 37) % 100
            price_forms: tuple[object, ...] = (
                f"{whole}.{cents:02d}",
                whole,
                float(f"{whole}.5"),
                float(f"{whole}.{cents:02d}"),
            )
            order["limit_price"] = price_forms[(index // 2) % len(price_forms)]
        orders.append(order)
    return orders


def expected_limit_price(sent: object) -> Decimal | None:
    """The price the API should store for ``sent``: exactly what the client wrote, in cents."""
    return None if sent is None else Decimal(str(sent))


def in_parallel(function: Callable[[requests.Session, _T], _R], items: Iterable[_T]) -> list[_R]:
    """``function(session, item)`` for each item, from :data:`CLIENT_THREADS` threads, in order."""
    with _session_per_thread() as session, ThreadPoolExecutor(CLIENT_THREADS, "e2e-client") as pool:
        return list(pool.map(lambda item: function(session(), item), items))


@contextmanager
def _session_per_thread() -> Iterator[Callable[[], requests.Session]]:
    """A getter of the calling thread's own session; every session is closed at the end."""
    local = threading.local()
    sessions: list[requests.Session] = []
    lock = threading.Lock()

    def session() -> requests.Session:
        current: requests.Session | None = getattr(local, "session", None)
        if current is None:
            current = local.session = requests.Session()
            with lock:
                sessions.append(current)
        return current

    try:
        yield session
    finally:
        for each in sessions:
            each.close()


def post_order(base_url: str) -> Callable[[requests.Session, dict[str, Any]], Posted]:
    """A poster of one order that records the answer, whatever it is, for the checks to judge."""

    def post(session: requests.Session, order: dict[str, Any]) -> Posted:
        response = session.post(f"{base_url}/orders", json=order, timeout=REQUEST_TIMEOUT_S)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return Posted(order, response.status_code, response.headers.get("Location"), body)

    return post


def get_order(base_url: str) -> Callable[[requests.Session, str], requests.Response]:
    """A reader of one order as the API shows it."""

    def get(session: requests.Session, order_id: str) -> requests.Response:
        return session.get(f"{base_url}/orders/{order_id}", timeout=REQUEST_TIMEOUT_S)

    return get


def creation_problems(posted: Posted) -> list[str]:
    """Everything wrong with the answer to one valid order; empty when it is right."""
    if posted.status_code != 201 or not isinstance(posted.body, dict):
        return [f"{posted.sent} gave {posted.status_code}: {posted.body!r}"]
    body, sent = posted.body, posted.sent
    problems = []
    order_id = str(body.get("id"))
    if posted.location != f"/orders/{order_id}":
        problems.append(f"Location {posted.location!r} for id {order_id!r}")
    if body.get("status") != "pending":
        problems.append(f"status {body.get('status')!r}")
    for name in ("type", "side", "instrument", "quantity"):
        if body.get(name) != sent[name]:
            problems.append(f"{name} {body.get(name)!r}, sent {sent[name]!r}")
    expected_price = expected_limit_price(sent.get("limit_price"))
    answered_price = body.get("limit_price")
    if expected_price is None:
        if answered_price is not None:
            problems.append(f"limit_price {answered_price!r} for a market order")
    elif answered_price != f"{expected_price:.2f}" or Decimal(answered_price) != expected_price:
        problems.append(f"limit_price {answered_price!r}, sent {sent['limit_price']!r}")
    return [f"order {order_id} ({sent}): {problem}" for problem in problems]


@contextmanager
def database(database_url: str) -> Iterator[connection]:
    """A connection to the run's database that sees each commit as soon as it is made."""
    with closing(
        psycopg2.connect(database_url, connect_timeout=5, options="-c statement_timeout=5000")
    ) as opened:
        opened.autocommit = True
        yield opened


def orders_in_database(db: connection, order_ids: list[str]) -> dict[str, tuple[str, int, bool]]:
    """Status, attempts and whether ``placed_at`` is set, by id, read straight from PostgreSQL."""
    with db.cursor() as cursor:
        cursor.execute(
            """
            SELECT id::text, status, attempts, placed_at IS NOT NULL
            FROM orders WHERE id = ANY(%s::uuid[])
            """,
            (order_ids,),
        )
        return {row[0]: (row[1], row[2], row[3]) for row in cursor.fetchall()}


def wait_until_settled(
    service: RunningService, db: connection, order_ids: list[str], deadline: float
) -> dict[str, tuple[str, int, bool]]:
    """Poll until no order is pending, or the deadline passes; return the last rows seen."""
    while True:
        service.check_alive()
        rows = orders_in_database(db, order_ids)
        statuses = Counter(status for status, _, _ in rows.values())
        if len(rows) == len(order_ids) and statuses["pending"] == 0:
            return rows
        if time.monotonic() >= deadline:
            return rows
        time.sleep(POLL_INTERVAL_S)


def exchange_log(service: RunningService) -> tuple[Counter[str], Counter[str]]:
    """Calls to the exchange and successful placements, counted by order id, from the workers' log."""
    # Run by run: a run killed mid-line leaves a last line cut short, which must not run into the next.
    lines = [line for log in service.worker_logs for line in read_messages(log)]
    calls = Counter(match[1] for line in lines if (match := _CALL_LINE.fullmatch(line)))
    placed = Counter(match[1] for line in lines if (match := _PLACED_LINE.fullmatch(line)))
    return calls, placed


def wait_for_placements_logged(
    service: RunningService, order_ids: set[str]
) -> tuple[Counter[str], Counter[str]]:
    """The exchange log once it names every order as placed (log lines pass through dramatiq's pipes)."""
    deadline = time.monotonic() + LOG_FLUSH_DEADLINE_S
    calls, placements = exchange_log(service)
    while not order_ids <= placements.keys() and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        calls, placements = exchange_log(service)
    return calls, placements


def test_places_every_order_posted_concurrently_exactly_once(
    service: RunningService, settings: Settings
) -> None:
    orders = order_requests(ORDER_COUNT)
    started = time.monotonic()
    posted = in_parallel(post_order(service.base_url), orders)
    posting_s = time.monotonic() - started

    problems = [problem for each in posted for problem in creation_problems(each)]
    assert not problems, f"{len(problems)} problems with the 201s, first ones:\n" + "\n".join(problems[:20])
    order_ids = [each.body["id"] for each in posted]
    assert len(set(order_ids)) == ORDER_COUNT, "the API gave the same id to two orders"

    with database(settings.database_url) as db:
        rows = wait_until_settled(service, db, order_ids, started + PLACEMENT_DEADLINE_S)
    all_placed_s = time.monotonic() - started
    statuses = Counter(status for status, _, _ in rows.values())
    assert len(rows) == ORDER_COUNT, f"only {len(rows)} of {ORDER_COUNT} orders are in the database"
    assert statuses == {"placed": ORDER_COUNT}, (
        f"not all placed within {PLACEMENT_DEADLINE_S:.0f} s of the first POST: {dict(statuses)}"
    )
    assert all(has_placed_at for _, _, has_placed_at in rows.values()), "a placed order has no placed_at"

    answers = in_parallel(get_order(service.base_url), order_ids)
    wrong_answers = [
        f"GET /orders/{order_id}: {answer.status_code} {answer.text.strip()}"
        for order_id, answer in zip(order_ids, answers, strict=True)
        if answer.status_code != 200
        or answer.json()["status"] != "placed"
        or answer.json()["attempts"] != rows[order_id][1]
        or answer.json()["placed_at"] is None
    ]
    assert not wrong_answers, "the API disagrees with the database:\n" + "\n".join(wrong_answers[:20])

    calls, placements = wait_for_placements_logged(service, set(order_ids))
    assert placements.keys() - set(order_ids) == set(), "the workers placed orders that were never posted"
    assert set(order_ids) - placements.keys() == set(), "placed orders missing from the workers' log"
    placed_twice = {order_id: count for order_id, count in placements.items() if count != 1}
    assert not placed_twice, f"orders placed on the exchange more than once: {placed_twice}"
    assert calls.keys() - set(order_ids) == set(), "the workers called the exchange for orders never posted"
    miscounted = {
        order_id: (calls[order_id], attempts)
        for order_id, (_, attempts, _) in rows.items()
        if calls[order_id] != attempts
    }
    assert not miscounted, f"exchange calls != attempts, as (calls, attempts) by id: {miscounted}"

    total_calls = sum(calls.values())
    print(
        f"\ne2e: {ORDER_COUNT} orders posted in {posting_s:.2f} s by {CLIENT_THREADS} clients; "
        f"all placed {all_placed_s:.2f} s after the first POST; "
        f"{total_calls} exchange calls, {total_calls - ORDER_COUNT} retries, "
        f"most attempts on one order: {max(calls.values())}"
    )


#: Invalid orders and the fields each one's 422 must name.
INVALID_ORDERS: tuple[tuple[dict[str, Any], set[str]], ...] = (
    (
        {"type": "limit", "side": "buy", "instrument": "us0378331005", "quantity": 0, "limit_price": "1.5"},
        {"instrument", "quantity"},
    ),
    ({"type": "limit", "side": "sell", "instrument": "US0378331005", "quantity": 5}, {"limit_price"}),
)


def test_rejects_an_invalid_order_with_422_naming_each_field_at_fault(service: RunningService) -> None:
    # One test for all cases rather than a parametrized one: the shared `settings` fixture puts
    # the test's name in its queue name, and dramatiq refuses the brackets of a parametrized name.
    with requests.Session() as session:
        for order, fields_at_fault in INVALID_ORDERS:
            response = session.post(f"{service.base_url}/orders", json=order, timeout=REQUEST_TIMEOUT_S)

            assert response.status_code == 422, (order, response.text)
            assert response.headers["Content-Type"] == "application/json"
            body = response.json()
            assert (body["code"], body["status"]) == (422, "Unprocessable Entity"), body
            assert set(body["errors"]["json"]) == fields_at_fault, (order, body)
