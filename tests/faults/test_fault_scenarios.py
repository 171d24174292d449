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

import os
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from orders_testkit.fault_exchange import OUTAGE_MARKER_ENV
from orders_testkit.processes import RunningService
from tests.faults.harness import (
    FAULT_AFTER_ANSWERS,
    LONG_OUTAGE_LIMITS,
    SHORT_LEASE,
    FaultRun,
    cut_off_consumers,
    kill_and_restart_workers,
    kill_one_web_worker,
)
from tests.faults.ledger import Ledger, some
from tests.faults.servers import child_pids

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
        or paused inside the exchange call may do that, and the service must report each one
        (its record of the second placement, or its takeover of the dead holder's claim).
    :param placed_within_s: seconds from the fault's end by which the exchange has placed its
        last order.
    """
    print(f"\n{ledger.row()}\n{ledger.details()}")
    assert ledger.client_errors == 0, "every order the stream sends is valid"
    assert not ledger.missing, f"orders answered 201 with no row: {some(ledger.missing)}"
    assert not ledger.not_placed, f"orders answered 201 but not placed: {some(ledger.not_placed)}"
    assert ledger.statuses["pending"] == 0, f"orders still pending: {ledger.statuses}"
    # Only a COMMIT whose outcome the API could not learn in time may leave an order behind a
    # 500, and the API logs (and counts) each one.
    assert not ledger.refused_yet_stored_unannounced, (
        f"requests answered 500 whose order exists: {some(ledger.refused_yet_stored_unannounced)}"
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
    assert not ledger.undetected_duplicates, (
        f"orders placed twice that the service does not report: {some(ledger.undetected_duplicates)}"
    )
    last_placement_s = ledger.fault_end_to_last_placement_s
    assert last_placement_s is not None and last_placement_s <= placed_within_s, (
        f"the exchange's last placement came {last_placement_s} s after the fault ended,"
        f" not within {placed_within_s:.0f} s"
    )
    assert not ledger.dead_letters, f"messages dead-lettered: {some(ledger.dead_letters)}"
    assert ledger.created_after_fault > 0, "no order was accepted after the fault ended"
    assert ledger.stop_failure is None, ledger.stop_failure


def run_long_outage(
    fault_run: FaultRun,
    scenario: str,
    outage: Callable[[RunningService], None],
    load_cap_s: float = LONG_LOAD_CAP_S,
) -> Ledger:
    """Run ``outage`` under the load, with :data:`LONG_OUTAGE_LIMITS`; return the ledger once settled.

    The stream goes on for :data:`LOAD_AFTER_RECOVERY_S` after the outage, however long it took
    (``load_cap_s`` only bounds it). ``outage`` is given the running service.
    """
    with fault_run.service(fault_run.options(LONG_OUTAGE_LIMITS)) as service:
        with fault_run.load(service, load_cap_s) as load:
            load.wait_for_answers(FAULT_AFTER_ANSWERS)
            with fault_run.fault():
                outage(service)
            load.stop_after(LOAD_AFTER_RECOVERY_S)
        fault_run.wait_until_settled(service)
    return fault_run.ledger(scenario, service)


def held_for(freeze: Callable[[], AbstractContextManager[list[int]]], seconds: float) -> list[int]:
    """Keep a server frozen for ``seconds`` (SIGCONT comes whatever happens); return the pids frozen."""
    with freeze() as pids:
        time.sleep(seconds)
    return pids


#: A fault injected into a running service, ending when it returns.
Outage = Callable[[RunningService], None]


def postgres_stopped(fault_run: FaultRun, seconds: float) -> Outage:
    """PostgreSQL stopped (a fast shutdown: connections refused) for ``seconds``, then started."""

    def outage(_service: RunningService) -> None:
        fault_run.postgres.stop("fast")
        time.sleep(seconds)
        fault_run.postgres.start()

    return outage


def rabbitmq_stopped(fault_run: FaultRun, seconds: float) -> Outage:
    """The RabbitMQ node stopped for ``seconds``, then started."""

    def outage(_service: RunningService) -> None:
        fault_run.rabbitmq.stop_node()
        time.sleep(seconds)
        fault_run.rabbitmq.start()

    return outage


def frozen_for(
    freeze: Callable[[], AbstractContextManager[list[int]]], seconds: float, pids: list[int]
) -> Outage:
    """A server frozen (SIGSTOP: sockets open, nothing answers) for ``seconds``; its pids go into ``pids``."""

    def outage(_service: RunningService) -> None:
        pids.extend(held_for(freeze, seconds))

    return outage


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
    outage = postgres_stopped(fault_run, LONG_DATABASE_OUTAGE_S)
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

    outage = frozen_for(fault_run.postgres.frozen, LONG_DATABASE_OUTAGE_S, frozen)
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

    outage = frozen_for(fault_run.rabbitmq.frozen, LONG_BROKER_OUTAGE_S, frozen)
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
    outage = rabbitmq_stopped(fault_run, LONG_BROKER_OUTAGE_S)
    ledger = run_long_outage(fault_run, "RabbitMQ node stopped, 30 s, started", outage)
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.server_errors + ledger.other > 0, (
        "the broker's outage reached no client: no fault was injected"
    )


# Faults past every counter: outages of minutes (a retry budget spent by waiting, a lease, the
# heartbeat, the COMMIT lookup, the shutdown timeout all run out long before), a worker paused
# past its lease and the heartbeat, and the workers stopped in the middle of an outage.

#: Seconds of the outages that outlast every counter: 30 database waits of 1 to 5 s spend a
#: retry budget in about 90 s, and every lease, heartbeat and lookup is shorter still.
MINUTES_OUTAGE_S = 150.0
#: Seconds one worker process stays paused (SIGSTOP): longer than its 10 s lease plus the time
#: RabbitMQ takes to drop its connection (two missed 20 s heartbeats).
PAUSED_WORKER_S = 60.0
#: The outage during which the workers are stopped, and when into it they get SIGTERM.
SIGTERM_OUTAGE_S = 90.0
SIGTERM_AFTER_S = 10.0
#: Seconds the workers have to exit after SIGTERM: Dramatiq's shutdown timeout (30 s) and more.
WORKERS_EXIT_S = 45.0


#: pytest-timeout's bound on a scenario with a minutes-long fault, above the 300 s default: the
#: fault, the stream's 15 s after it, settling (at most 90 s) and the processes' start and stop.
MINUTES_SCENARIO_TIMEOUT_S = 600


def load_cap_s(outage_s: float) -> float:
    """A bound on the stream of an outage of ``outage_s``: it stops by itself 15 s after the fault."""
    return outage_s + LOAD_AFTER_RECOVERY_S + 60.0


@pytest.mark.timeout(MINUTES_SCENARIO_TIMEOUT_S)
def test_orders_survive_postgresql_stopped_for_150_s(fault_run: FaultRun, report_ledger: list[str]) -> None:
    outage = postgres_stopped(fault_run, MINUTES_OUTAGE_S)
    ledger = run_long_outage(
        fault_run, "PostgreSQL fast stop, 150 s, start", outage, load_cap_s(MINUTES_OUTAGE_S)
    )
    report_ledger.append(ledger.row())

    # Waiting for the database spends none of an order's retries: the first refusals after the
    # outage are retried like any other, and nothing fails.
    check(ledger)
    assert ledger.statuses["failed"] == 0


@pytest.mark.timeout(MINUTES_SCENARIO_TIMEOUT_S)
def test_orders_survive_postgresql_frozen_for_150_s(fault_run: FaultRun, report_ledger: list[str]) -> None:
    outage = frozen_for(fault_run.postgres.frozen, MINUTES_OUTAGE_S, [])
    ledger = run_long_outage(
        fault_run, "PostgreSQL frozen (SIGSTOP), 150 s, SIGCONT", outage, load_cap_s(MINUTES_OUTAGE_S)
    )
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.statuses["failed"] == 0


@pytest.mark.timeout(MINUTES_SCENARIO_TIMEOUT_S)
def test_orders_survive_rabbitmq_stopped_for_150_s(fault_run: FaultRun, report_ledger: list[str]) -> None:
    outage = rabbitmq_stopped(fault_run, MINUTES_OUTAGE_S)
    ledger = run_long_outage(
        fault_run, "RabbitMQ node stopped, 150 s, started", outage, load_cap_s(MINUTES_OUTAGE_S)
    )
    report_ledger.append(ledger.row())

    check(ledger)
    assert ledger.server_errors + ledger.other > 0, "the broker's outage reached no client"


def test_orders_survive_a_worker_process_paused_past_its_lease_and_the_heartbeat(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    paused: list[int] = []

    def outage(service: RunningService) -> None:
        [first, *_] = child_pids(service.workers_pid)
        paused.append(first)
        os.kill(first, signal.SIGSTOP)
        try:
            time.sleep(PAUSED_WORKER_S)
        finally:
            os.kill(first, signal.SIGCONT)

    ledger = run_long_outage(fault_run, "one worker process SIGSTOPped 60 s, SIGCONT", outage)
    report_ledger.append(ledger.row())
    print(f"worker process paused: {paused}")

    # Its messages go to the other process once RabbitMQ drops its connection, and its claims are
    # taken over; back, it settles only what its new channel delivered, and checks its claims
    # before calling. Only a call it was inside of when paused may place an order twice: counted.
    check(ledger, window_duplicates_allowed=True)
    assert ledger.exchange.taken_over, "no claim of the paused process was taken over: no fault was injected"


@pytest.mark.timeout(MINUTES_SCENARIO_TIMEOUT_S)
def test_orders_survive_the_workers_stopped_and_started_during_a_postgresql_outage(
    fault_run: FaultRun, report_ledger: list[str]
) -> None:
    handed_over: list[int] = []

    def outage(service: RunningService) -> None:
        fault_run.postgres.stop("fast")
        stopped_at = time.monotonic()
        time.sleep(SIGTERM_AFTER_S)
        os.kill(service.workers_pid, signal.SIGTERM)
        exit_status = service.wait_for_exit("workers", WORKERS_EXIT_S)
        assert exit_status is not None, f"the workers did not exit within {WORKERS_EXIT_S:.0f} s of SIGTERM"
        handed_over.append(service.worker_log_text().count("handed to the courier"))
        service.restart_workers(database_up=False)
        time.sleep(max(0.0, stopped_at + SIGTERM_OUTAGE_S - time.monotonic()))
        fault_run.postgres.start()

    ledger = run_long_outage(
        fault_run, "workers SIGTERMed 10 s into a 90 s PostgreSQL stop, restarted", outage, load_cap_s(90.0)
    )
    report_ledger.append(ledger.row())
    print(f"answers handed to the courier: {handed_over}")

    # The answers the stopped workers could not record went to the broker, and were recorded by
    # the new ones: no order placed twice, none lost.
    check(ledger)
