"""Nothing lost, nothing doubled: a steady stream of orders through real processes while a dependency fails.

Each scenario runs gunicorn and the dramatiq CLI on the suite's private PostgreSQL and RabbitMQ,
streams ``POST /orders`` from a separate process (25/s for 24 s, 40 s in the broker scenario,
until 15 s after the fault's end in the long-outage ones; 10 s timeout each), injects one fault
about 3 s in, waits for the stream to end and every order to settle (at most 90 s), stops the
processes and checks the ledger: every ``201`` order exists and is placed, within 60 s of the
fault's end; no request answered ``500`` or not at all has an order, except where the API can
lose a commit's outcome, and then no more than a bound; the exchange (its own record) placed
each order once, except in the window between its answer and the commit of ``placed``, which
only a dead worker can hit; no message is dead-lettered. Workers retry with backoffs of 200 ms to
2 s so that settling takes seconds. docs/fault-injection.md holds the ledgers of a run.

The last four scenarios outlast the service's own timeouts: PostgreSQL stopped or frozen
(SIGSTOP) for longer than twice the placement time limit, RabbitMQ frozen or stopped for 30 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.faults.harness import (
    FAULT_AFTER_ANSWERS,
    LONG_OUTAGE_LIMITS,
    OUTAGE_MARKER_ENV,
    SHORT_LEASE,
    FaultRun,
    cut_off_consumers,
    kill_and_restart_workers,
    kill_one_web_worker,
)
from tests.faults.ledger import Ledger, some

pytestmark = pytest.mark.faults

#: Seconds RabbitMQ's application stays stopped (``stop_app`` itself takes 6 to 15 s more under load).
BROKER_DOWN_S = 5.0
#: Seconds of load in the broker scenario: longer than the others', so that the stream outlasts
#: the slowest ``stop_app`` seen and shows the API accepting orders again.
BROKER_LOAD_S = 40.0
#: Seconds PostgreSQL stays stopped between a fast shutdown and the next start.
DATABASE_DOWN_S = 3.0
#: Seconds every exchange call fails.
EXCHANGE_OUTAGE_S = 5.0
#: Seconds the placement queue nacks every publish.
NACK_S = 3.0
#: Seconds PostgreSQL stays stopped, or frozen, in the long scenarios: longer than twice the
#: placement time limit (10 s) and than twice the claim lease (10 s) they run with.
LONG_DATABASE_OUTAGE_S = 25.0
#: Seconds RabbitMQ stays frozen, or stopped, in the long scenarios.
LONG_BROKER_OUTAGE_S = 30.0
#: Seconds of load after a long outage ends: time for the API to show it accepts orders again.
LOAD_AFTER_RECOVERY_S = 15.0
#: The long scenarios' stream stops 15 s after the fault's end; this only bounds it.
LONG_LOAD_CAP_S = 110.0
#: Seconds from the fault's end within which every order must have been placed.
PLACED_WITHIN_S = 60.0


def check(
    ledger: Ledger,
    *,
    window_duplicates_allowed: bool = False,
    placed_within_s: float = PLACED_WITHIN_S,
) -> None:
    """The invariants every scenario must keep; print the ledger first, so a failure shows it.

    :param window_duplicates_allowed: whether an order may be placed twice: only a worker killed
        between the exchange's answer and the commit of ``placed`` may do that.
    :param placed_within_s: seconds from the fault's end by which the exchange has placed its
        last order.
    """
    print(f"\n{ledger.row()}\n{ledger.details()}")
    assert ledger.client_errors == 0, "every order the stream sends is valid"
    assert not ledger.missing, f"orders answered 201 with no row: {some(ledger.missing)}"
    assert not ledger.not_placed, f"orders answered 201 but not placed: {some(ledger.not_placed)}"
    assert ledger.statuses["pending"] == 0, f"orders still pending: {ledger.statuses}"
    assert not ledger.refused_yet_stored, (
        f"requests answered 500 whose order exists: {some(ledger.refused_yet_stored)}"
    )
    # A request the client stopped waiting for may still be committed: it waited for the
    # database in the API (in gunicorn's queue behind threads blocked on it, or in a batch whose
    # COMMIT's outcome is being learnt). That is the fault's doing, so it was sent before the
    # fault ended; after it, every client hears back in time.
    assert not ledger.unanswered_stored_after_fault, (
        "requests sent after the fault, given up on by the client, yet stored:"
        f" {some(ledger.unanswered_stored_after_fault)}"
    )
    assert not ledger.unexplained, f"rows no request explains: {some(ledger.unexplained)}"
    assert not ledger.successes_without_row, (
        f"orders placed on the exchange with no row: {some(ledger.successes_without_row)}"
    )
    assert not ledger.placed_without_success, (
        f"placed orders the exchange has no record of: {some(ledger.placed_without_success)}"
    )
    assert not ledger.exchange.called_after_placed, (
        f"exchange called again after placed was committed: {some(ledger.exchange.called_after_placed)}"
    )
    if not window_duplicates_allowed:
        assert not ledger.duplicates, (
            f"orders placed on the exchange more than once: {some(ledger.duplicates)}"
        )
    last_placement_s = ledger.fault_end_to_last_placement_s
    assert last_placement_s is not None and last_placement_s <= placed_within_s, (
        f"the exchange's last placement came {last_placement_s} s after the fault ended,"
        f" not within {placed_within_s:.0f} s"
    )
    assert not ledger.dead_letters, f"messages dead-lettered: {some(ledger.dead_letters)}"
    assert ledger.created_after_fault > 0, "no order was accepted after the fault ended"
    assert ledger.stop_failure is None, ledger.stop_failure


def run_long_outage(fault_run: FaultRun, scenario: str, outage: Callable[[], None]) -> Ledger:
    """Run ``outage`` under the load, with :data:`LONG_OUTAGE_LIMITS`; return the ledger once settled.

    The stream goes on for :data:`LOAD_AFTER_RECOVERY_S` after the outage, however long it took.
    """
    with fault_run.service(fault_run.options(LONG_OUTAGE_LIMITS)) as service:
        with fault_run.load(service, LONG_LOAD_CAP_S) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                outage()
            load.stop_after(LOAD_AFTER_RECOVERY_S)
        fault_run.wait_until_settled(service)
    return fault_run.ledger(scenario, service)


def held_for(freeze: Callable[[], AbstractContextManager[list[int]]], seconds: float) -> list[int]:
    """Keep a server frozen for ``seconds`` (SIGCONT comes whatever happens); return the pids frozen."""
    with freeze() as pids:
        time.sleep(seconds)
    return pids


def test_orders_survive_rabbitmq_stopped_and_started_mid_stream(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    with fault_run.service(fault_run.options()) as service:
        with fault_run.load(service, BROKER_LOAD_S) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                fault_run.rabbitmq.stop_app()
                time.sleep(BROKER_DOWN_S)
                fault_run.rabbitmq.start_app()
        fault_run.wait_until_settled(service)
    ledger = fault_run.ledger("RabbitMQ stop_app, 5 s, start_app", service)
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.server_errors + ledger.other > 0, (
        "the broker's outage reached no client: no fault was injected"
    )


def test_orders_survive_postgresql_restarted_mid_stream(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    with fault_run.service(fault_run.options(LONG_OUTAGE_LIMITS)) as service:
        with fault_run.load(service) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                fault_run.postgres.stop("fast")
                time.sleep(DATABASE_DOWN_S)
                fault_run.postgres.start()
        fault_run.wait_until_settled(service)
    ledger = fault_run.ledger("PostgreSQL fast stop, 3 s, start", service)
    report_ledger.append(ledger.row())

    # A commit cut off by the shutdown is looked up once the server is back, so its request is
    # answered by what happened. A worker that lost the database after the exchange answered
    # records the placement once it is back, so no order is placed twice.
    check(ledger)
    assert ledger.server_errors + ledger.other > 0, (
        "the database's outage reached no client: no fault was injected"
    )


def test_orders_survive_worker_processes_killed_mid_placement(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    with fault_run.service(fault_run.options(SHORT_LEASE)) as service:
        with fault_run.load(service) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                killed = kill_and_restart_workers(service)
        fault_run.wait_until_settled(service)
    ledger = fault_run.ledger(f"SIGKILL {killed} worker processes + CLI, restart", service)
    report_ledger.append(ledger.row())

    check(ledger, window_duplicates_allowed=True)
    assert ledger.exchange.interrupted, (
        "no placement was in flight when the workers died: no fault was injected"
    )
    # A placement cut short leaves its claim; it is taken over only once the 4 s lease expires.
    assert ledger.max_to_placed_s >= 4.0


def test_orders_survive_a_gunicorn_worker_killed_mid_stream(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    with fault_run.service(fault_run.options()) as service:
        with fault_run.load(service) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                kill_one_web_worker(service)
        fault_run.wait_until_settled(service)
    ledger = fault_run.ledger("SIGKILL one gunicorn worker", service)
    report_ledger.append(ledger.row())

    # A request the killed process had committed but not yet answered gets no answer at all.
    check(ledger)


def test_orders_survive_an_exchange_outage_and_are_placed_after_it(
    fault_run: FaultRun, report_ledger: list[str], tmp_path: Path
) -> None:
    marker = tmp_path / "exchange-down"
    with fault_run.service(fault_run.options({OUTAGE_MARKER_ENV: str(marker)})) as service:
        with fault_run.load(service) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                marker.touch()
                time.sleep(EXCHANGE_OUTAGE_S)
                marker.unlink()
        fault_run.wait_until_settled(service)
    ledger = fault_run.ledger("exchange refuses every call, 5 s", service)
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.server_errors + ledger.other == 0, "an exchange outage must never reach the API's clients"
    refused = service.worker_log_text().count("refused: outage")
    assert refused > 0, "no exchange call was refused: no fault was injected"


def test_orders_nacked_by_the_broker_are_500s_and_leave_no_row(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    # A quorum queue nacks only once it holds a ready message over its length limit, and live
    # workers take every message at once; so the broker first closes the workers' consumer
    # connections (Dramatiq reconnects them after 3 s), and the queue fills while they are away,
    # as it would behind workers that are down or slow.
    queue = fault_run.settings.placement_queue
    with fault_run.service(fault_run.options()) as service:
        with fault_run.load(service) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                cut_off_consumers(fault_run.admin, queue)
                fault_run.admin.reject_publishes_to(queue)
                time.sleep(NACK_S)
                fault_run.admin.delete_policy(f"reject-{queue}")
        fault_run.wait_until_settled(service)
    ledger = fault_run.ledger("consumers cut off + max-length 0 reject-publish, 3 s", service)
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.server_errors > 0, "no publish was nacked: no fault was injected"


def test_orders_survive_postgresql_stopped_longer_than_twice_the_time_limit(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    def outage() -> None:
        fault_run.postgres.stop("fast")
        time.sleep(LONG_DATABASE_OUTAGE_S)
        fault_run.postgres.start()

    ledger = run_long_outage(fault_run, "PostgreSQL fast stop, 25 s, start", outage)
    report_ledger.append(ledger.row())

    # Only a COMMIT cut off by the shutdown can leave an order behind a 500: one batch per web
    # process at most. Placements cut off from the database longer than their time limit and
    # their claim's lease must still be recorded once, not placed again.
    check(ledger)
    assert ledger.server_errors + ledger.other > 0, (
        "the database's outage reached no client: no fault was injected"
    )


def test_orders_survive_postgresql_frozen_longer_than_twice_the_time_limit(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    frozen: list[int] = []

    def outage() -> None:
        frozen.extend(held_for(fault_run.postgres.frozen, LONG_DATABASE_OUTAGE_S))

    ledger = run_long_outage(fault_run, "PostgreSQL frozen (SIGSTOP), 25 s, SIGCONT", outage)
    report_ledger.append(ledger.row())
    print(f"processes frozen: {len(frozen)}")

    # Nothing answers and no connection breaks: only client-side bounds notice. A COMMIT sent
    # before the freeze completes after it, whether or not the API still waits for it: at most
    # one batch per web process.
    check(ledger)
    assert len(frozen) > 1, "only the postmaster was frozen: no backend was found"
    assert ledger.server_errors + ledger.other > 0, (
        "the database's freeze reached no client: no fault was injected"
    )


def test_orders_survive_rabbitmq_frozen_for_30_s(fault_run: FaultRun, report_ledger: list[str]) -> None:
    frozen: list[int] = []

    def outage() -> None:
        frozen.extend(held_for(fault_run.rabbitmq.frozen, LONG_BROKER_OUTAGE_S))

    ledger = run_long_outage(fault_run, "RabbitMQ frozen (SIGSTOP), 30 s, SIGCONT", outage)
    report_ledger.append(ledger.row())
    print(f"processes frozen: {len(frozen)}")

    # No confirm arrives while the broker is frozen: the API rolls back and answers 500, and a
    # message confirmed after the thaw names an order never committed, which the worker drops.
    check(ledger)
    assert ledger.server_errors + ledger.other > 0, (
        "the broker's freeze reached no client: no fault was injected"
    )


def test_orders_survive_rabbitmq_node_stopped_for_30_s(fault_run: FaultRun, report_ledger: list[str]) -> None:
    def outage() -> None:
        fault_run.rabbitmq.stop_node()
        time.sleep(LONG_BROKER_OUTAGE_S)
        fault_run.rabbitmq.start()

    ledger = run_long_outage(fault_run, "RabbitMQ node stopped, 30 s, started", outage)
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.server_errors + ledger.other > 0, (
        "the broker's outage reached no client: no fault was injected"
    )
