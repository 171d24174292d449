"""The execution feed through the real processes, the ingestor and the applier SIGKILLed mid-stream.

``orders-exchange-feed`` (with its repeats, reordering and dropped connections on) reports on
placed orders; ``orders-ingestor`` follows it into the partition queues; ``orders-applier``
writes the executions. Each of the last two is killed with SIGKILL while reports flow and
started again. The ledger afterwards: every report of the feed's durable log is stored exactly
once, and every order's execution state equals a straight replay of its reports in order.

A second test puts poison in a feed (the tests' WebSocket feed, which sends what it is given):
the two processes drop it alone and apply every other report.
"""

from __future__ import annotations

import random
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from orders_api.adapters.rabbitmq.execution_queues import execution_queue_declarations
from orders_api.settings.shared import Settings
from orders_testkit.execution_reports import (
    expected_state,
    feed_of,
    logged_reports,
    replayed_states,
    report_fields,
    store_orders,
    stored_exec_ids,
    stored_states,
    story_of,
)
from orders_testkit.processes import (
    BIN,
    ProcessOptions,
    _Process,
    _start,
    _stop_quietly,
    free_port,
    service_environment,
)
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.feed_server import Faults, FeedServer
from tests.prometheus_samples import scrape_port
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


def test_poison_reports_in_the_feed_are_dropped_alone_and_every_other_report_applied(
    plain_settings: Settings, engine: sa.Engine, queue_prefix: str, tmp_path: Path
) -> None:
    """A report whose ``exec_id`` holds a NUL (PostgreSQL cannot store it) and one without
    ``order_id`` (the ingestor cannot route it), each a copy of a real fill, mid-feed. Either
    stopped the pipeline for good before: the applier died on the first, the ingestor never
    passed the second. Now the ingestor skips the second, the applier drops the first."""
    rng = random.Random(21)
    orders = store_orders(engine, ORDERS // 3)
    stories = [story_of(order, rng) for order in orders]
    feed = [report_fields(report, 0) for report in feed_of(stories, rng, repeats=0.0)]
    fill = next(item for item in feed if item["kind"] == "fill")
    nul = {**fill, "exec_id": f"{fill['exec_id']}\u0000"}
    unroutable = {key: value for key, value in fill.items() if key != "order_id"}
    third = len(feed) // 3
    reports = [
        {**item, "feed_seq": feed_seq}
        for feed_seq, item in enumerate(
            [*feed[:third], nul, *feed[third:-third], unroutable, *feed[-third:]], 1
        )
    ]
    ingestor_port, applier_port = free_port(), free_port()
    processes: list[_Process] = []
    order_ids = [order.id for order in orders]
    with FeedServer(reports, Faults(frame_size=5, repeat=0.05, drop_after_frames=20)) as feed_server:
        env = service_environment(plain_settings, ProcessOptions())
        env.update(
            FEED_URL=feed_server.url,
            EXECUTION_QUEUE_PREFIX=queue_prefix,
            EXECUTION_PARTITIONS=str(PARTITIONS),
            INGESTOR_HEARTBEAT_FILE=str(tmp_path / "ingestor.heartbeat"),
            APPLIER_HEARTBEAT_FILE=str(tmp_path / "applier.heartbeat"),
            INGESTOR_METRICS_PORT=str(ingestor_port),
            APPLIER_METRICS_PORT=str(applier_port),
        )
        try:
            for name in ("orders-ingestor", "orders-applier"):
                processes.append(_start(name, [str(BIN / name)], env, tmp_path / f"{name}.log"))
            wait_until(
                lambda: len(stored_exec_ids(engine, order_ids)) == len(feed),
                SETTLE_TIMEOUT_S,
                "every report but the poison applied",
                every_s=POLL_INTERVAL_S,
            )
            wait_until(
                lambda: feed_seq_saved(engine) == len(reports),
                SETTLE_TIMEOUT_S,
                "the resume point to pass the poison",
                every_s=POLL_INTERVAL_S,
            )
            ingestor, applier = scrape_port(ingestor_port), scrape_port(applier_port)
            for process in processes:
                assert process.popen.poll() is None, f"{process.name} stopped"
        finally:
            for process in reversed(processes):
                _stop_quietly(process)

    assert sorted(stored_exec_ids(engine, order_ids)) == sorted(str(item["exec_id"]) for item in feed)
    assert stored_states(engine, order_ids) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }
    assert ingestor[("orders_feed_reports_skipped_total", frozenset({("reason", "malformed")}))] == 1
    assert applier[("orders_execution_reports_total", frozenset({("outcome", "malformed")}))] == 1
    logs = "".join((tmp_path / f"{name}.log").read_text() for name in ("orders-ingestor", "orders-applier"))
    assert "skipping feed_seq" in logs and "malformed execution report, dropped" in logs
