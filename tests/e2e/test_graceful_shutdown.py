"""SIGTERM, as Kubernetes sends it, to the real gunicorn and dramatiq processes while they work.

gunicorn must answer every request it has accepted before it exits; dramatiq must finish or hand
back every message it holds, leave no order claimed, and lose nothing: once the workers are
started again, every order is placed, once. A second SIGTERM (dramatiq then kills its worker
processes mid-placement) must lose nothing either: the claims the killed placements leave behind
expire after their lease, and the orders are placed then.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, suppress
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg2
import pytest
import requests
from psycopg2.extensions import connection

from orders_api.api import gunicorn_config
from orders_api.settings.shared import Settings
from orders_testkit.json_logs import read_messages
from orders_testkit.processes import ProcessOptions, RunningService
from tests.e2e.test_order_flow_end_to_end import (
    database,
    exchange_log,
    in_parallel,
    order_requests,
    post_order,
)

pytestmark = pytest.mark.e2e

#: gunicorn's graceful timeout, from the settings every API process runs with.
GUNICORN_GRACEFUL_TIMEOUT_S = float(gunicorn_config.graceful_timeout)
#: Seconds the workers may take to stop after SIGTERM: the placements in flight take 0.5 s each.
WORKER_STOP_DEADLINE_S = 20.0
#: Seconds a test waits for a state it sets up (requests blocked, placements in flight, log lines).
SETUP_DEADLINE_S = 15.0
#: Seconds, after the workers restart, within which every order must be placed.
SETTLE_DEADLINE_S = 60.0
#: Seconds one request may take, blocked behind the test's table lock included.
REQUEST_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.05

#: Requests in flight when gunicorn gets SIGTERM.
CONCURRENT_POSTS = 50
#: Orders being placed when the workers get SIGTERM.
PLACEMENT_ORDERS = 40

#: The line gunicorn's master logs when it takes SIGTERM, right before relaying it to its workers.
GUNICORN_TERM_LINE = "Handling signal: term"
#: Seconds the requests stay blocked once gunicorn handles SIGTERM: longer than the 2 s a quick
#: shutdown (SIGINT, SIGQUIT) gives its workers before SIGKILL, so only a graceful one passes.
HOLD_AFTER_SIGTERM_S = 3.0
#: What each dramatiq worker process logs on a first and on a second SIGTERM.
DRAMATIQ_STOPPING_LINE = "Stopping worker process..."
DRAMATIQ_KILLING_LINE = "Killing worker process..."

#: The workers' entry point for settings out of order on purpose (a lease that lapses within a test).
UNCHECKED_WORKERS = "tests.e2e.unchecked_workers"
#: The API, its database waits stretched so that requests can queue behind the test's lock (too
#: long for the workers' claims, whose rules are left unchecked).
PATIENT_API = ProcessOptions(
    web_workers=2,
    web_threads=16,
    worker_processes=1,
    worker_threads=4,
    extra_env={
        "DB_POOL_SIZE": "16",
        "DB_POOL_TIMEOUT_S": "20",
        "STATEMENT_TIMEOUT_MS": "20000",
        "DB_REPLY_TIMEOUT_S": "25",
        "GROUP_COMMIT_WAIT_S": "30",
        # Above a lost COMMIT's lookup with these waits, or gunicorn refuses to start (docs/timeouts.md).
        "GRACEFUL_TIMEOUT_S": "160",
    },
    worker_module=UNCHECKED_WORKERS,
)
#: Few placement threads (2 x 4), so that most orders still wait in the queue at SIGTERM.
FEW_PLACEMENT_THREADS = ProcessOptions(worker_processes=2, worker_threads=4)
#: The same with a 4 s claim lease, so that the claims of killed placements expire quickly.
SHORT_LEASE = ProcessOptions(
    worker_processes=2,
    worker_threads=4,
    extra_env={"CLAIM_LEASE_MS": "4000"},
    worker_module=UNCHECKED_WORKERS,
)

_T = TypeVar("_T")

# Socket states in the kernel's /proc/net/tcp table.
_TCP_ESTABLISHED = "01"
_TCP_LISTEN = "0A"


# --- helpers ----------------------------------------------------------------------------------


def wait_for(condition: Callable[[], _T | None], what: str, deadline_s: float = SETUP_DEADLINE_S) -> _T:
    """Poll ``condition()`` until it returns something truthy; fail the test after ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {deadline_s:.0f} s")
        time.sleep(POLL_INTERVAL_S)


def lock_waiters(db: connection) -> int:
    """Sessions of this database blocked on a lock: here, inserts queued behind the test's table lock."""
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def order_states(db: connection, order_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Each order's status, attempts, claim and placement time, straight from PostgreSQL."""
    with db.cursor() as cursor:
        cursor.execute(
            """
            SELECT id::text, status, attempts, claimed_until, claimed_until > now() AS claimed, placed_at
            FROM orders WHERE id = ANY(%s::uuid[])
            """,
            (order_ids,),
        )
        names = [column.name for column in cursor.description or ()]
        return {row[0]: dict(zip(names, row, strict=True)) for row in cursor.fetchall()}


def connections_to(port: int) -> tuple[int, int]:
    """The connections this process holds to ``port`` on 127.0.0.1, and how many are not accepted yet.

    Read from the kernel's table (Linux): a connection in the accept queue is established but
    not in gunicorn's hands; when the listening socket closes, the kernel resets it. The listening
    socket's receive-queue column is the length of its accept queue. Only the client ends this
    test process holds are counted, so that no other connection to the port passes for one of its
    requests.
    """
    own_sockets = _own_socket_inodes()
    established = unaccepted = 0
    with open("/proc/net/tcp", encoding="ascii") as table:
        next(table)  # the header
        for line in table:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            state, queues, inode = fields[3], fields[4], fields[9]
            if local_port == port and state == _TCP_LISTEN:
                unaccepted += int(queues.split(":")[1], 16)
            elif remote_port == port and state == _TCP_ESTABLISHED and inode in own_sockets:
                established += 1
    return established, unaccepted


def _own_socket_inodes() -> set[str]:
    """The inodes of the sockets this process holds open, as ``/proc/net/tcp`` names them."""
    inodes = set()
    for descriptor in Path("/proc/self/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(descriptor)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    return inodes


def claimed(db: connection, order_ids: list[str]) -> dict[str, datetime]:
    """The orders claimed right now (a worker is placing them, or died doing so), with their claims' end."""
    return {
        order_id: row["claimed_until"]
        for order_id, row in order_states(db, order_ids).items()
        if row["claimed"]
    }


def statuses(db: connection, order_ids: list[str]) -> Counter[str]:
    return Counter(row["status"] for row in order_states(db, order_ids).values())


def post_orders(service: RunningService, count: int) -> list[str]:
    posted = in_parallel(post_order(service.base_url), order_requests(count))
    assert [each.status_code for each in posted] == [201] * count, [each.body for each in posted]
    return [each.body["id"] for each in posted]


def log_count(service: RunningService, line: str) -> int:
    """How many of the workers' log lines (this run's) have ``line`` as their message."""
    return read_messages(service.worker_log).count(line)


def restart_and_settle(service: RunningService, db: connection, order_ids: list[str]) -> float:
    """Start the workers again and wait until every order is placed; the seconds that took."""
    restarted = time.monotonic()
    service.restart_workers()

    def all_placed() -> bool:
        service.check_alive()
        return statuses(db, order_ids) == {"placed": len(order_ids)}

    wait_for(all_placed, f"all {len(order_ids)} orders placed after the restart", SETTLE_DEADLINE_S)
    return time.monotonic() - restarted


def placements_logged(service: RunningService, order_ids: list[str]) -> tuple[Counter[str], Counter[str]]:
    """Exchange calls and successes by order id, over every run's log, once each placed order is in it."""
    wanted = set(order_ids)

    def logged() -> tuple[Counter[str], Counter[str]] | None:
        calls, placed = exchange_log(service)
        return (calls, placed) if wanted <= placed.keys() else None

    return wait_for(logged, "every placed order in the workers' logs")


# --- gunicorn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("process_options", [PATIENT_API], ids=["api"])
def test_sigterm_to_gunicorn_answers_every_request_in_flight_then_exits_cleanly(
    service: RunningService, settings: Settings
) -> None:
    port = urlsplit(service.base_url).port
    assert port is not None
    instrument = uuid.uuid4().hex[:12].upper()
    orders = [{**order, "instrument": instrument} for order in order_requests(CONCURRENT_POSTS)]
    with (
        closing(psycopg2.connect(settings.database_url, connect_timeout=5)) as locker,
        database(settings.database_url) as db,
        ThreadPoolExecutor(CONCURRENT_POSTS, "shutdown-client") as clients,
    ):
        # Every insert waits behind this lock, so that the requests are held mid-transaction:
        # those of a group commit's batch in its INSERT, the others queued for the next batch.
        with locker.cursor() as cursor:
            cursor.execute("LOCK TABLE orders IN EXCLUSIVE MODE")
        answers = [clients.submit(_post, service.base_url, order) for order in orders]

        def all_accepted_and_blocked() -> int | None:
            """Lock waiters (blocked batches), once every connection is in gunicorn's hands."""
            established, unaccepted = connections_to(port)
            waiting = lock_waiters(db)
            if established == CONCURRENT_POSTS and unaccepted == 0 and waiting >= 1:
                return waiting
            return None

        in_flight = wait_for(
            all_accepted_and_blocked, "every request accepted, and a batch blocked on the lock"
        )

        signalled = time.monotonic()
        os.kill(service.api_pid, signal.SIGTERM)
        wait_for(lambda: GUNICORN_TERM_LINE in read_messages(service.api_log), "gunicorn handling SIGTERM")
        time.sleep(HOLD_AFTER_SIGTERM_S)
        locker.rollback()  # lets the blocked inserts go on, now that the API is shutting down

        results = [_outcome(answer) for answer in answers]
        exit_status = service.wait_for_exit("api", GUNICORN_GRACEFUL_TIMEOUT_S)
        stopped_s = time.monotonic() - signalled
        committed = _order_ids_for(db, instrument)

    print(
        f"\ngunicorn SIGTERM: all {CONCURRENT_POSTS} requests accepted,"
        f" {in_flight} group commits blocked mid-transaction at SIGTERM,"
        f" answers {dict(Counter(status for status, _ in results))},"
        f" exit status {exit_status} {stopped_s:.1f} s after SIGTERM"
    )
    assert exit_status == 0, service.log_tails()
    assert stopped_s < GUNICORN_GRACEFUL_TIMEOUT_S
    assert "SIGKILL" not in service.api_log.read_text(), service.log_tails()
    cut_off = [detail for status, detail in results if status != 201]
    assert not cut_off, f"{len(cut_off)} of {CONCURRENT_POSTS} requests got no 201: {cut_off[:5]}"
    assert {order_id for _, order_id in results} == committed, "answers and committed orders differ"


def _post(base_url: str, order: dict[str, Any]) -> tuple[int, str]:
    with requests.Session() as session:
        response = session.post(f"{base_url}/orders", json=order, timeout=REQUEST_TIMEOUT_S)
        body = response.json()  # a body cut off midway fails here
    return response.status_code, str(body.get("id") if isinstance(body, dict) else body)


def _outcome(answer: Future[tuple[int, str]]) -> tuple[int, str]:
    """The status and order id of one POST, or ``0`` and the client's error when no full answer came."""
    try:
        return answer.result(timeout=REQUEST_TIMEOUT_S + 5)
    except (requests.RequestException, ValueError) as error:
        return 0, f"{type(error).__name__}: {error}"


def _order_ids_for(db: connection, instrument: str) -> set[str]:
    with db.cursor() as cursor:
        cursor.execute("SELECT id::text FROM orders WHERE instrument = %s", (instrument,))
        return {row[0] for row in cursor.fetchall()}


# --- dramatiq ---------------------------------------------------------------------------------


@pytest.mark.parametrize("process_options", [FEW_PLACEMENT_THREADS], ids=["workers"])
def test_sigterm_to_the_workers_finishes_or_returns_every_message_and_loses_none(
    service: RunningService, settings: Settings
) -> None:
    order_ids = post_orders(service, PLACEMENT_ORDERS)
    with database(settings.database_url) as db:
        in_flight = wait_for(lambda: claimed(db, order_ids), "placements in flight")

        signalled = time.monotonic()
        os.kill(service.workers_pid, signal.SIGTERM)
        exit_status = service.wait_for_exit("workers", WORKER_STOP_DEADLINE_S)
        stopped_s = time.monotonic() - signalled

        after_stop = order_states(db, order_ids)
        left_claimed = {order_id for order_id, row in after_stop.items() if row["claimed"]}
        first_run = Counter(row["status"] for row in after_stop.values())
        first_log = read_messages(service.worker_log)
        settle_s = restart_and_settle(service, db, order_ids)
        settled = order_states(db, order_ids)
    calls, placements = placements_logged(service, order_ids)

    print(
        f"\ndramatiq SIGTERM: {len(in_flight)} placements in flight, exit status {exit_status}"
        f" {stopped_s:.1f} s after SIGTERM; then {dict(first_run)};"
        f" all placed {settle_s:.1f} s after the restart; {sum(calls.values())} exchange calls"
    )
    assert exit_status == 0, service.log_tails()
    assert DRAMATIQ_KILLING_LINE not in first_log
    assert not left_claimed, f"claims left behind by a graceful shutdown: {left_claimed}"
    unfinished = [
        order_id for order_id in in_flight if f"exchange call for order {order_id}" not in first_log
    ]
    assert not unfinished, f"placements in flight at SIGTERM that never called the exchange: {unfinished}"
    assert first_run["pending"] > 0, "every order was placed before SIGTERM took effect: nothing was returned"
    assert all(row["claimed_until"] is None for row in settled.values())
    placed_twice = {order_id: count for order_id, count in placements.items() if count != 1}
    assert not placed_twice, f"placed on the exchange more than once: {placed_twice}"
    assert set(placements) == set(order_ids)
    assert {order_id: calls[order_id] for order_id in order_ids} == {
        order_id: row["attempts"] for order_id, row in settled.items()
    }, "exchange calls and recorded attempts differ"


@pytest.mark.parametrize("process_options", [SHORT_LEASE], ids=["workers"])
def test_a_second_sigterm_kills_placements_midway_and_their_orders_are_placed_once_the_claims_expire(
    service: RunningService, settings: Settings
) -> None:
    order_ids = post_orders(service, PLACEMENT_ORDERS)
    processes = FEW_PLACEMENT_THREADS.worker_processes
    with database(settings.database_url) as db:
        wait_for(lambda: claimed(db, order_ids), "placements in flight")

        os.kill(service.workers_pid, signal.SIGTERM)
        # Each worker process must have taken the first SIGTERM before the second, or the two
        # may reach it as one; its main loop then waits up to 1 s before it stops taking messages.
        wait_for(lambda: log_count(service, DRAMATIQ_STOPPING_LINE) >= processes, "workers stopping")
        os.kill(service.workers_pid, signal.SIGTERM)
        exit_status = service.wait_for_exit("workers", WORKER_STOP_DEADLINE_S)
        killed_at = time.time()

        killed = claimed(db, order_ids)  # killed midway: the claims outlive their holders
        first_log = read_messages(service.worker_log)
        settle_s = restart_and_settle(service, db, order_ids)
        settled = order_states(db, order_ids)
    _, placements = placements_logged(service, order_ids)

    duplicates = {order_id: count for order_id, count in placements.items() if count > 1}
    claims_left = [claim_end.timestamp() - killed_at for claim_end in killed.values()]
    waits = [settled[order_id]["placed_at"].timestamp() - killed_at for order_id in killed]
    print(
        f"\ndramatiq second SIGTERM: exit status {exit_status}; {len(killed)} placements killed midway,"
        f" their claims expiring up to {max(claims_left, default=0):.1f} s later;"
        f" placed {min(waits, default=0):.1f}-{max(waits, default=0):.1f} s after the kill;"
        f" all placed {settle_s:.1f} s after the restart; duplicates (killed after the exchange"
        f" answered, before the commit): {duplicates or 'none'}"
    )
    assert exit_status != 0
    assert DRAMATIQ_KILLING_LINE in first_log
    assert killed, "no placement was in flight when the workers were killed: the test proved nothing"
    assert all(row["claimed_until"] is None for row in settled.values())
    for order_id, claim_end in killed.items():
        assert settled[order_id]["placed_at"] >= claim_end, f"{order_id} placed before its claim expired"
    assert set(placements) == set(order_ids)
    assert set(duplicates) <= set(killed), f"placed twice though never killed midway: {duplicates}"
