"""The execution feed through the real processes, the ingestor and the applier SIGKILLed mid-stream.

``orders-exchange-feed`` (with its repeats, reordering and dropped connections on) reports on
placed orders; ``orders-ingestor`` follows it into the partition queues; ``orders-applier``
writes the executions. Each of the last two is killed with SIGKILL while reports flow and
started again. The ledger afterwards: every report of the feed's durable log is stored exactly
once, and every order's execution state equals a straight replay of its reports in order.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orders_api.adapters.execution_queues import execution_queue_declarations
from orders_api.config import Settings
from tests.e2e.processes import (
    BIN,
    ProcessOptions,
    _Process,
    _start,
    _stop_quietly,
    free_port,
    service_environment,
)
from tests.execution_reports import (
    logged_reports,
    replayed_states,
    store_orders,
    stored_exec_ids,
    stored_states,
)
from tests.rabbitmq_admin import RabbitAdmin
from tests.waiting import wait_until

pytestmark = pytest.mark.e2e

#: Orders placed before the feed starts, and the feed's pace: a stream of several seconds, so that
#: each kill lands mid-stream.
ORDERS = 300
FEED_RATE = 300
PARTITIONS = 4
#: Seconds for the whole stream to be applied once both processes are back.
SETTLE_TIMEOUT_S = 90.0
POLL_INTERVAL_S = 0.1


@pytest.fixture
def plain_settings(own_database_url: str, rabbitmq_url: str) -> Settings:
    """A database of this test's own: the feed reports on every placed order in it."""
    return Settings(database_url=own_database_url, rabbitmq_url=rabbitmq_url)


@pytest.fixture
def queue_prefix(rabbit: RabbitAdmin) -> Iterator[str]:
    """Partition queues of this test's own, deleted afterwards (quorum queues hold file handles)."""
    prefix = f"order-executions.{uuid.uuid4().hex[:8]}"
    yield prefix
    rabbit.delete_queues_if_present(
        *(declaration.name for declaration in execution_queue_declarations(prefix, PARTITIONS))
    )


def feed_seq_saved(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        saved = connection.execute(sa.text("SELECT max(last_feed_seq) FROM feed_cursors")).scalar()
    return int(saved or 0)


def test_every_report_is_applied_once_as_a_straight_replay_across_sigkills_of_ingestor_and_applier(
    plain_settings: Settings, engine: sa.Engine, queue_prefix: str, tmp_path: Path
) -> None:
    orders = store_orders(engine, ORDERS)
    order_ids = [order.id for order in orders]
    feed_port = free_port()
    env = service_environment(plain_settings, ProcessOptions())
    env.update(
        FEED_PORT=str(feed_port),
        FEED_URL=f"ws://127.0.0.1:{feed_port}/executions",
        FEED_STATE_DIR=str(tmp_path / "feed"),
        FEED_RATE=str(FEED_RATE),
        FEED_BATCH="5",
        # Faults on and frequent: repeats, reordering, a dropped connection every ~20 frames.
        FEED_REPEAT_PROBABILITY="0.05",
        FEED_REORDER_PROBABILITY="0.05",
        FEED_DROP_EVERY_FRAMES="20",
        EXECUTION_QUEUE_PREFIX=queue_prefix,
        EXECUTION_PARTITIONS=str(PARTITIONS),
        INGESTOR_HEARTBEAT_FILE=str(tmp_path / "ingestor.heartbeat"),
        APPLIER_HEARTBEAT_FILE=str(tmp_path / "applier.heartbeat"),
    )
    processes: list[_Process] = []

    def start(name: str, command: str) -> _Process:
        process = _start(name, [str(BIN / command)], env, tmp_path / f"{name}.log")
        processes.append(process)
        return process

    try:
        start("feed", "orders-exchange-feed")
        ingestor = start("ingestor", "orders-ingestor")
        applier = start("applier", "orders-applier")

        # Kill each mid-stream: once it has made progress, well before the feed has told all.
        wait_until(
            lambda: feed_seq_saved(engine) > 0,
            30,
            "the ingestor's first resume point",
            every_s=POLL_INTERVAL_S,
        )
        ingestor.popen.send_signal(signal.SIGKILL)
        ingestor.popen.wait(timeout=10)
        killed_ingestor_at = feed_seq_saved(engine)
        start("ingestor-2", "orders-ingestor")

        wait_until(
            lambda: len(stored_exec_ids(engine, order_ids)) > 0,
            30,
            "the applier's first commit",
            every_s=POLL_INTERVAL_S,
        )
        applier.popen.send_signal(signal.SIGKILL)
        applier.popen.wait(timeout=10)
        killed_applier_at = len(stored_exec_ids(engine, order_ids))
        start("applier-2", "orders-applier")

        def settled() -> bool:
            logged = logged_reports(tmp_path / "feed")
            complete = {
                report.order_id for report in logged if report.kind in {"fill", "cancelled", "rejected"}
            }
            return len(complete) == ORDERS and len(stored_exec_ids(engine, order_ids)) == len(logged)

        wait_until(settled, SETTLE_TIMEOUT_S, "every logged report applied", every_s=POLL_INTERVAL_S)
    finally:
        for process in reversed(processes):
            _stop_quietly(process)

    logged = logged_reports(tmp_path / "feed")
    stored = stored_exec_ids(engine, order_ids)
    assert sorted(stored) == sorted(report.exec_id for report in logged), "a report missing or applied twice"
    assert stored_states(engine, order_ids) == replayed_states(logged)
    print(
        f"\nexecution feed: {len(logged)} reports of {ORDERS} orders, each applied once; ingestor"
        f" SIGKILLed at resume point {killed_ingestor_at}, applier after {killed_applier_at} reports"
        f" stored; every order equals a straight replay"
    )
