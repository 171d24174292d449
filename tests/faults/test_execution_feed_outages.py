"""The execution feed through its real processes while PostgreSQL or RabbitMQ is away beyond their timeouts.

``orders-exchange-feed`` (none of its own faults, paced), ``orders-ingestor`` and
``orders-applier`` run on the suite's private servers and stream the stories of
:data:`ORDERS` placed orders for about a minute. Once the applier has committed its first
reports, one dependency is stopped or frozen (SIGSTOP) for longer than every timeout the two
processes have: ``DB_REPLY_TIMEOUT_S`` (5 s), the statement timeout (3 s), the ingestor's
confirm timeout (5 s), the applier's retry pause (up to 5 s) and the broker heartbeat (30 s, in
the RabbitMQ scenarios). The feed keeps logging meanwhile, as an exchange would. Afterwards:
every report the feed logged is stored exactly once and every order stands as a straight replay
of its reports; the reports logged by the fault's end are applied within :data:`SETTLED_WITHIN_S`
of it (the ledger's *caught up*), and the rest as the feed goes on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from orders_api.adapters.postgres.database import create_engine
from orders_api.executions import ExecutionKind
from orders_api.settings.shared import Settings
from orders_testkit.execution_reports import (
    logged_reports,
    replayed_states,
    store_orders,
    stored_exec_ids,
    stored_states,
)
from orders_testkit.processes import (
    BIN,
    ProcessOptions,
    _start,
    _stop_quietly,
    free_port,
    service_environment,
)
from tests.faults.feed_ledger import FEED_HEADER, FEED_RULE, FeedLedger
from tests.faults.harness import FaultRun
from tests.waiting import wait_until

pytestmark = pytest.mark.faults

#: Placed orders whose stories the feed tells, and its pace: about a minute of reports, so that
#: the feed is still logging when the outage ends.
ORDERS = 1200
FEED_RATE = 60
PARTITIONS = 4
#: Seconds PostgreSQL stays stopped or frozen: five times the longest client-side timeout.
DATABASE_OUTAGE_S = 25.0
#: Seconds RabbitMQ stays stopped or frozen: beyond the 30 s heartbeat of the applier's connection.
BROKER_OUTAGE_S = 40.0
#: Seconds from the fault's end within which the reports logged by then must be applied (and the
#: bound, beyond the fault's own length, on the whole stream's).
SETTLED_WITHIN_S = 60.0
#: Seconds to wait for the applier's first commit before the fault.
START_TIMEOUT_S = 60.0
POLL_INTERVAL_S = 0.2
#: The kinds of report that end a story.
FINAL_KINDS = {ExecutionKind.FILL, ExecutionKind.CANCELLED, ExecutionKind.REJECTED}


@contextmanager
def execution_feed(settings: Settings, directory: Path) -> Iterator[Path]:
    """The feed, the ingestor and the applier on ``settings``; yields the feed's state directory."""
    feed_port = free_port()
    state_dir = directory / "feed"
    env = service_environment(settings, ProcessOptions())
    env.update(
        FEED_PORT=str(feed_port),
        FEED_URL=f"ws://127.0.0.1:{feed_port}/executions",
        FEED_STATE_DIR=str(state_dir),
        FEED_RATE=str(FEED_RATE),
        FEED_CLEAN="1",
        EXECUTION_QUEUE_PREFIX="order-executions",
        EXECUTION_PARTITIONS=str(PARTITIONS),
        INGESTOR_HEARTBEAT_FILE=str(directory / "ingestor.heartbeat"),
        APPLIER_HEARTBEAT_FILE=str(directory / "applier.heartbeat"),
        INGESTOR_METRICS_PORT="0",
        APPLIER_METRICS_PORT="0",
    )
    processes = []
    try:
        for name in ("orders-exchange-feed", "orders-ingestor", "orders-applier"):
            processes.append(_start(name, [str(BIN / name)], env, directory / f"{name}.log"))
        yield state_dir
    finally:
        for process in reversed(processes):
            _stop_quietly(process)


def run_outage(fault_run: FaultRun, scenario: str, outage: Callable[[], None]) -> FeedLedger:
    """Stream the feed, run ``outage`` once reports are being applied, and return the ledger once settled."""
    engine = create_engine(fault_run.settings, pool_size=1, application_name="orders-faults")
    try:
        order_ids = [order.id for order in store_orders(engine, ORDERS)]
        with execution_feed(fault_run.settings, fault_run.directory) as state_dir:
            wait_until(
                lambda: _count(engine, order_ids) > 0,
                START_TIMEOUT_S,
                "the applier's first commit",
                every_s=POLL_INTERVAL_S,
            )
            applied_before = _count(engine, order_ids)
            started = time.monotonic()
            outage()
            ended = time.monotonic()
            backlog = len(logged_reports(state_dir))
            wait_until(
                lambda: _count(engine, order_ids) >= backlog,
                SETTLED_WITHIN_S,
                "the reports logged by the fault's end applied",
                every_s=POLL_INTERVAL_S,
            )
            caught_up_s = time.monotonic() - ended

            def settled() -> bool:
                logged = logged_reports(state_dir)
                finished = {report.order_id for report in logged if report.kind in FINAL_KINDS}
                return len(finished) == ORDERS and _count(engine, order_ids) >= len(logged)

            wait_until(
                settled,
                SETTLED_WITHIN_S + (ended - started),
                "every logged report applied",
                every_s=POLL_INTERVAL_S,
            )
            settled_after_s = time.monotonic() - ended
        logged = logged_reports(state_dir)
        stored = stored_exec_ids(engine, order_ids)
        states = stored_states(engine, order_ids)
    finally:
        engine.dispose()
    assert applied_before < len(logged) / 2, "the fault began after most of the stream: it proves little"
    expected = replayed_states(logged)
    return FeedLedger(
        scenario=scenario,
        logged=len(logged),
        stored=len(stored),
        missing=len({report.exec_id for report in logged} - set(stored)),
        stored_twice=len(stored) - len(set(stored)),
        unlike_replay=sum(1 for order_id, state in expected.items() if states.get(order_id) != state),
        fault_s=ended - started,
        caught_up_s=caught_up_s,
        settled_after_s=settled_after_s,
    )


def _count(engine: sa.Engine, order_ids: list[uuid.UUID]) -> int:
    """Reports stored so far; 0 while the database cannot answer."""
    try:
        return len(stored_exec_ids(engine, order_ids))
    except sa.exc.DBAPIError:
        return 0


def check(ledger: FeedLedger) -> None:
    """Every logged report stored once, every order a straight replay, in time; the ledger printed first."""
    print(f"\n{FEED_HEADER}\n{FEED_RULE}\n{ledger.row()}")
    assert ledger.missing == 0, "reports the feed logged were never applied"
    assert ledger.stored_twice == 0
    assert ledger.stored == ledger.logged
    assert ledger.unlike_replay == 0, "orders whose state differs from a straight replay of their reports"
    assert ledger.settled_after_s <= SETTLED_WITHIN_S


def test_reports_survive_postgresql_stopped_for_25_s(
    fault_run: FaultRun, report_feed_ledger: list[str]
) -> None:
    def outage() -> None:
        fault_run.postgres.stop("fast")
        time.sleep(DATABASE_OUTAGE_S)
        fault_run.postgres.start()

    ledger = run_outage(fault_run, "PostgreSQL fast stop, 25 s, start", outage)
    report_feed_ledger.append(ledger.row())
    check(ledger)


def test_reports_survive_postgresql_frozen_for_25_s(
    fault_run: FaultRun, report_feed_ledger: list[str]
) -> None:
    def outage() -> None:
        with fault_run.postgres.frozen():
            time.sleep(DATABASE_OUTAGE_S)

    ledger = run_outage(fault_run, "PostgreSQL frozen (SIGSTOP), 25 s, SIGCONT", outage)
    report_feed_ledger.append(ledger.row())
    check(ledger)


def test_reports_survive_rabbitmq_stopped_for_40_s(
    fault_run: FaultRun, report_feed_ledger: list[str]
) -> None:
    def outage() -> None:
        fault_run.rabbitmq.stop_node()
        time.sleep(BROKER_OUTAGE_S)
        fault_run.rabbitmq.start()

    ledger = run_outage(fault_run, "RabbitMQ node stopped, 40 s, started", outage)
    report_feed_ledger.append(ledger.row())
    check(ledger)


def test_reports_survive_rabbitmq_frozen_for_40_s(fault_run: FaultRun, report_feed_ledger: list[str]) -> None:
    def outage() -> None:
        with fault_run.rabbitmq.frozen():
            time.sleep(BROKER_OUTAGE_S)

    ledger = run_outage(fault_run, "RabbitMQ frozen (SIGSTOP), 40 s, SIGCONT", outage)
    report_feed_ledger.append(ledger.row())
    check(ledger)
