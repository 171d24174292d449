"""The applier against real PostgreSQL and RabbitMQ: each report applied once, whatever the feed or crashes.

Reports go into the partition queues repeated and shuffled, as the feed sends them; after the
applier has drained the queues, every order must stand exactly as a straight replay of its
story leaves it, and the ledger must hold each report once.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.execution_batches import apply_batch
from orders_api.adapters.rabbitmq.confirmed_publisher import OutgoingMessage, QueueDeclaration
from orders_api.adapters.rabbitmq.execution_messages import encode_reports
from orders_api.adapters.rabbitmq.execution_queues import (
    execution_queue_declarations,
    partition_of,
    partition_queue,
)
from orders_api.domain import Order
from orders_api.execution_feed.applier import Applier
from orders_api.execution_feed.metrics import ApplierMetrics
from orders_api.execution_feed.partition_assignment import partition_consumers
from orders_api.executions import ExecutionKind, ExecutionReport
from orders_api.settings.applier import ApplierSettings
from orders_api.settings.shared import Settings
from orders_testkit.execution_reports import (
    count_stored,
    expected_state,
    feed_of,
    publish_reports,
    report_fields,
    store_orders,
    stored_exec_ids,
    stored_states,
    story_of,
)
from orders_testkit.processes import free_port
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.prometheus_samples import scrape_port
from tests.waiting import wait_until

PARTITIONS = 4
#: Seconds the applier may take to drain what a test published.
DRAIN_TIMEOUT_S = 60.0


@pytest.fixture
def applier_settings(
    plain_settings: Settings, rabbit: RabbitAdmin, tmp_path: Path
) -> Iterator[ApplierSettings]:
    """``plain_settings`` with partition queues of this test's own, deleted afterwards (quorum queues
    hold file handles)."""
    prefix = f"order-executions.{uuid.uuid4().hex[:8]}"
    yield ApplierSettings(
        **plain_settings.model_dump(),
        execution_queue_prefix=prefix,
        execution_partitions=PARTITIONS,
        applier_heartbeat_file=tmp_path / "heartbeat",
    )
    rabbit.delete_queues_if_present(
        *(declaration.name for declaration in execution_queue_declarations(prefix, PARTITIONS))
    )


def ready_messages(rabbit: RabbitAdmin, settings: ApplierSettings) -> int:
    """Messages left in the partition queues, ready or unacked, as the broker counts them now."""
    total = 0
    for partition in range(settings.execution_partitions):
        queue = rabbit.queue(partition_queue(settings.execution_queue_prefix, partition))
        total += int(queue.get("messages_ready", 0)) + int(queue.get("messages_unacknowledged", 0))
    return total


@contextmanager
def applier_running(
    applier_settings: ApplierSettings, engine: sa.Engine
) -> Iterator[tuple[Applier, ApplierMetrics, threading.Thread]]:
    """An applier on a thread of its own, with its metrics; stopped, and seen to end, when the block ends."""
    metrics = ApplierMetrics()
    applier = Applier(applier_settings, engine, metrics)
    thread = threading.Thread(target=applier.run)
    thread.start()
    try:
        yield applier, metrics, thread
    finally:
        applier.stop()
        thread.join(timeout=10)
    assert not thread.is_alive(), "the applier did not stop within 10 s"


def test_repeated_and_shuffled_reports_are_each_applied_once_as_a_straight_replay(
    plain_settings: Settings, applier_settings: ApplierSettings, engine: sa.Engine, rabbit: RabbitAdmin
) -> None:
    rng = random.Random(11)
    orders = store_orders(engine, 62)
    stories = [story_of(order, rng) for order in orders]
    # The last two orders' reports travel outside the feed: one as a single-object message (as
    # queued before the ingestor batched), one beside a malformed report in the same array.
    feed = feed_of(stories[:-2], rng, repeats=0.3)
    stranger = ExecutionReport(
        "stranger", uuid.uuid4(), 1, stories[0][0].kind, 0, None, stories[0][0].reported_at
    )
    queue = partition_queue(applier_settings.execution_queue_prefix, 0)
    garbage = OutgoingMessage(queue, b'{"kind": "fill"', "garbage")
    single = [
        OutgoingMessage(queue, json.dumps(report_fields(report, 0)).encode(), report.exec_id)
        for report in stories[-2]
    ]
    beside_malformed = OutgoingMessage(
        queue,
        encode_reports([{"kind": "fill"}, *(report_fields(report, 0) for report in stories[-1])]),
        "beside-malformed",
    )
    resent = publish_reports(
        plain_settings.rabbitmq_url,
        applier_settings.execution_queue_prefix,
        PARTITIONS,
        [*feed, stranger],
        extra=[garbage, *single, beside_malformed],
    )
    with applier_running(applier_settings, engine) as (applier, metrics, _thread):
        distinct = sum(len(story) for story in stories)
        wait_until(
            lambda: count_stored(engine, [o.id for o in orders]) == distinct, DRAIN_TIMEOUT_S, "every report"
        )

    assert sorted(stored_exec_ids(engine, [o.id for o in orders])) == sorted(
        r.exec_id for s in stories for r in s
    )
    assert stored_states(engine, [o.id for o in orders]) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }
    assert applier.applied == distinct
    well_formed = len(feed) + 1 + len(stories[-2]) + len(stories[-1])
    assert_counted(
        metrics,
        {
            "applied": distinct,
            "repeated": well_formed - distinct - 1,
            "unknown_order": 1,
            "malformed": 2,  # the body that is not JSON, the report beside a good one
            "refused": 0,
        },
        resent,
    )
    assert metrics.registry.get_sample_value("orders_execution_lag_seconds_count") == distinct
    # The repeats, the report about no order of ours and the malformed ones were all acked.
    wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the queues to be empty")
    assert applier_settings.applier_heartbeat_file.exists()


def test_a_report_the_database_refuses_is_dropped_alone_and_every_other_applied(
    plain_settings: Settings, applier_settings: ApplierSettings, engine: sa.Engine, rabbit: RabbitAdmin
) -> None:
    """Catches one absurd report stalling every partition: its fill's notional overflows
    ``filled_notional`` (NUMERIC(30, 6)), which fails the same way on every retry of its batch."""
    rng = random.Random(13)
    orders = store_orders(engine, 40)
    stories = [story_of(order, rng) for order in orders]
    feed = feed_of(stories, rng, repeats=0.1)
    poison = ExecutionReport(
        "poison",
        orders[0].id,
        99,
        ExecutionKind.FILL,
        2**62,
        Decimal("999999999999.9999"),
        datetime.now(UTC),
    )
    half = len(feed) // 2
    resent = publish_reports(
        plain_settings.rabbitmq_url,
        applier_settings.execution_queue_prefix,
        PARTITIONS,
        [*feed[:half], poison, *feed[half:]],
    )
    ids = [order.id for order in orders]
    with applier_running(applier_settings, engine) as (_applier, metrics, _thread):
        distinct = sum(len(story) for story in stories)
        wait_until(lambda: count_stored(engine, ids) == distinct, DRAIN_TIMEOUT_S, "every other report")
        wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the queues to be empty")

    assert "poison" not in stored_exec_ids(engine, ids)
    assert stored_states(engine, ids) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }
    assert_counted(metrics, {"applied": distinct, "refused": 1}, resent)


@pytest.mark.parametrize(
    "poison",
    [
        pytest.param({"exec_id": "nul\u0000inside"}, id="NUL in exec_id"),
        pytest.param({"exec_id": "\ud800"}, id="lone surrogate exec_id"),
        pytest.param({"order_id": None}, id="no order_id"),
    ],
)
def test_a_report_that_cannot_be_stored_is_dropped_alone_and_the_rest_of_its_message_applied(
    plain_settings: Settings,
    applier_settings: ApplierSettings,
    engine: sa.Engine,
    rabbit: RabbitAdmin,
    poison: dict[str, object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Catches one report stopping every partition: psycopg2 refuses a NUL or a lone surrogate with a
    ``ValueError`` (no SQLAlchemy error), which once escaped the applier's loop and ended the process,
    and the message came back first, forever. The poison sits mid-message, copied from a real fill,
    so that applying it would also show in its order's state."""
    rng = random.Random(14)
    orders = store_orders(engine, 12)
    stories = [story_of(order, rng) for order in orders]
    feed = feed_of(stories, rng, repeats=0.0)
    fields = [report_fields(report, feed_seq) for feed_seq, report in enumerate(feed, start=1)]
    copied = next(item for item in fields if item["kind"] in ("fill", "partial_fill"))
    bad = {key: value for key, value in {**copied, **poison}.items() if value is not None}
    queue = partition_queue(applier_settings.execution_queue_prefix, 0)
    half = len(fields) // 2
    message = OutgoingMessage(queue, encode_reports([*fields[:half], bad, *fields[half:]]), "with-poison")
    publish_reports(
        plain_settings.rabbitmq_url, applier_settings.execution_queue_prefix, PARTITIONS, [], extra=[message]
    )
    ids = [order.id for order in orders]
    with applier_running(applier_settings, engine) as (_applier, metrics, thread):
        wait_until(
            lambda: count_stored(engine, ids) == len(feed) or not thread.is_alive(),
            DRAIN_TIMEOUT_S,
            "every other report",
        )
        assert thread.is_alive(), "the applier stopped on the poison report"
        wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the queues to be empty")

    assert sorted(stored_exec_ids(engine, ids)) == sorted(report.exec_id for report in feed)
    assert stored_states(engine, ids) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }
    counted = reports_counted(metrics)
    assert counted["applied"] == len(feed)
    # The parser owns text that is not text (orders_api.executions._text): malformed, not refused.
    assert (counted["malformed"], counted["refused"]) == (1, 0)
    dropped = [
        record for record in caplog.records if record.levelname == "ERROR" and hasattr(record, "report")
    ]
    assert [record.report for record in dropped] == [bad], "the dropped report is logged whole"


@pytest.mark.parametrize("exec_id", ["nul\u0000inside", "\ud800"], ids=["NUL", "lone surrogate"])
def test_text_the_driver_cannot_encode_past_the_parser_is_refused_alone_and_the_batch_applied(
    engine: sa.Engine, exec_id: str
) -> None:
    """The second line behind the parser: psycopg2's bare ``ValueError`` is taken as refused data,
    so the batch is applied report by report and only the report it cannot encode is handed back."""
    rng = random.Random(16)
    orders = store_orders(engine, 4)
    stories = [story_of(order, rng) for order in orders]
    reports = feed_of(stories, rng, repeats=0.0)
    poison = ExecutionReport(exec_id, orders[0].id, 99, ExecutionKind.ACCEPTED, 0, None, datetime.now(UTC))

    outcome = apply_batch(engine, [*reports[:2], poison, *reports[2:]])

    assert outcome.refused == [poison]
    assert outcome.applied.applied == len(reports)
    ids = [order.id for order in orders]
    assert sorted(stored_exec_ids(engine, ids)) == sorted(report.exec_id for report in reports)
    assert stored_states(engine, ids) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }


def test_a_report_already_stored_by_an_earlier_batch_is_counted_repeated_and_changes_nothing(
    plain_settings: Settings, applier_settings: ApplierSettings, engine: sa.Engine, rabbit: RabbitAdmin
) -> None:
    """The ledger's other half: a repeat that arrives after its first copy committed, in a batch of
    its own (the feed resending after a reconnect, the ingestor republishing a run)."""
    rng = random.Random(15)
    orders = store_orders(engine, 10)
    stories = [story_of(order, rng) for order in orders]
    feed = feed_of(stories, rng, repeats=0.0)
    ids = [order.id for order in orders]
    resent = publish_reports(
        plain_settings.rabbitmq_url, applier_settings.execution_queue_prefix, PARTITIONS, feed
    )
    with applier_running(applier_settings, engine) as (_applier, metrics, thread):
        wait_until(lambda: count_stored(engine, ids) == len(feed), DRAIN_TIMEOUT_S, "the first copies")
        wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the first copies acked")
        before = stored_states(engine, ids)
        repeated_before = reports_counted(metrics)["repeated"] or 0
        resent += publish_reports(
            plain_settings.rabbitmq_url, applier_settings.execution_queue_prefix, PARTITIONS, feed
        )
        wait_until(
            lambda: (
                (reports_counted(metrics)["repeated"] or 0) - repeated_before >= len(feed)
                or not thread.is_alive()
            ),
            DRAIN_TIMEOUT_S,
            "the repeats to be counted",
        )
        assert thread.is_alive()
        wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the queues to be empty")
    assert_counted(metrics, {"applied": len(feed), "repeated": len(feed)}, resent)
    assert len(stored_exec_ids(engine, ids)) == len(feed)
    assert (
        stored_states(engine, ids)
        == before
        == {order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)}
    )


def assert_counted(metrics: ApplierMetrics, expected: dict[str, int], resent: int) -> None:
    """Each outcome in ``expected`` counted exactly, up to ``resent`` more of those other than
    ``applied`` (reports the broker refused once and took again, see ``publish_reports``)."""
    counted = reports_counted(metrics)
    for outcome, count in expected.items():
        assert count <= (counted[outcome] or 0) <= count + (0 if outcome == "applied" else resent), (
            f"{outcome}: {counted[outcome]} counted, {count} expected, {resent} resent"
        )
    extra = sum((counted[outcome] or 0) - count for outcome, count in expected.items())
    assert extra <= resent, f"{extra} more reports counted than sent once, {resent} resent"


def reports_counted(metrics: ApplierMetrics) -> dict[str, float | None]:
    """``orders_execution_reports_total`` by outcome."""
    return {
        outcome: metrics.registry.get_sample_value("orders_execution_reports_total", {"outcome": outcome})
        for outcome in ("applied", "repeated", "unknown_order", "malformed", "refused")
    }


def _start_applier(
    settings: Settings, applier_settings: ApplierSettings, log: Path, *, metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "APPLIER_METRICS_PORT": str(metrics_port),
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "EXECUTION_QUEUE_PREFIX": applier_settings.execution_queue_prefix,
        "EXECUTION_PARTITIONS": str(applier_settings.execution_partitions),
        "APPLIER_HEARTBEAT_FILE": str(applier_settings.applier_heartbeat_file),
    }
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-c", "from orders_api.execution_feed.applier import main; main()"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


def test_an_applier_killed_or_stopped_mid_stream_loses_and_doubles_nothing_once_restarted(
    plain_settings: Settings,
    applier_settings: ApplierSettings,
    engine: sa.Engine,
    rabbit: RabbitAdmin,
    tmp_path: Path,
) -> None:
    rng = random.Random(12)
    orders = store_orders(engine, 3000, quantity=1000)
    stories = [story_of(order, rng) for order in orders]
    ids = [order.id for order in orders]
    distinct = sum(len(story) for story in stories)
    publish_reports(
        plain_settings.rabbitmq_url,
        applier_settings.execution_queue_prefix,
        PARTITIONS,
        feed_of(stories, rng, repeats=0.2),
    )
    log = tmp_path / "applier.log"

    first = _start_applier(plain_settings, applier_settings, log)
    try:
        wait_until(lambda: count_stored(engine, ids) >= 500, DRAIN_TIMEOUT_S, "the first batches")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    finally:
        first.kill()
    stored_at_kill = count_stored(engine, ids)
    assert stored_at_kill < distinct, "the applier finished before it could be killed mid-stream"

    second = _start_applier(plain_settings, applier_settings, log)
    try:
        wait_until(lambda: count_stored(engine, ids) >= stored_at_kill + 500, DRAIN_TIMEOUT_S, "more batches")
        second.send_signal(signal.SIGTERM)  # mid-stream too: the batch in hand commits and is acked
        assert second.wait(timeout=20) == 0, log.read_text()
    finally:
        second.kill()
    assert count_stored(engine, ids) < distinct, "the applier finished before it could be stopped mid-stream"

    stored_before_third = count_stored(engine, ids)
    metrics_port = free_port()
    third = _start_applier(plain_settings, applier_settings, log, metrics_port=metrics_port)
    try:
        wait_until(lambda: count_stored(engine, ids) == distinct, DRAIN_TIMEOUT_S, "every report")
        # What the third applier applied, as its metrics port tells a scrape.
        samples = scrape_port(metrics_port)
        applied = distinct - stored_before_third
        assert samples[("orders_execution_reports_total", frozenset({("outcome", "applied")}))] == applied
        assert samples[("orders_execution_lag_seconds_count", frozenset())] == applied
        third.send_signal(signal.SIGTERM)
        assert third.wait(timeout=20) == 0, log.read_text()
    finally:
        third.kill()

    assert stored_states(engine, ids) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }
    assert len(stored_exec_ids(engine, ids)) == distinct
    wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the queues to be empty")
    assert "applier stopped" in log.read_text()


def test_a_batch_the_database_refuses_stays_unacked_and_is_applied_once_the_database_is_back(
    database_url: str,
    rabbitmq_url: str,
    applier_settings: ApplierSettings,
    engine: sa.Engine,
    rabbit: RabbitAdmin,
) -> None:
    rng = random.Random(13)
    orders = store_orders(engine, 20)
    stories = [story_of(order, rng) for order in orders]
    ids = [order.id for order in orders]
    distinct = sum(len(story) for story in stories)
    # Statements give up after 300 ms, so a locked table fails each try of the batch quickly.
    impatient = applier_settings.model_copy(
        update={"database_url": database_url, "rabbitmq_url": rabbitmq_url, "statement_timeout_ms": 300}
    )
    applier_engine = create_engine(impatient, pool_size=1, application_name="orders-test-applier")
    applier = Applier(impatient, applier_engine)
    thread = threading.Thread(target=applier.run)
    blocker = engine.connect()
    try:
        blocker.execute(sa.text("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE"))
        thread.start()
        publish_reports(
            rabbitmq_url,
            applier_settings.execution_queue_prefix,
            PARTITIONS,
            feed_of(stories, rng, repeats=0.2),
        )
        wait_until(
            lambda: (
                sum(
                    int(rabbit.queue(q.name).get("messages_unacknowledged", 0))
                    for q in _queues(applier_settings)
                )
                > 0
            ),
            20.0,
            "the applier to hold the reports unacked",
        )
        wait_until(
            lambda: any(name.startswith("orders-applier ") for name in rabbit.connection_names()),
            10.0,
            "the applier's connection to show its name",
        )
        assert applier.applied == 0
        blocker.rollback()  # the database is back
        wait_until(lambda: count_stored(engine, ids) == distinct, DRAIN_TIMEOUT_S, "every report")
    finally:
        blocker.close()
        applier.stop()
        thread.join(timeout=10)
        applier_engine.dispose()

    assert stored_states(engine, ids) == {
        order.id: expected_state(story) for order, story in zip(orders, stories, strict=True)
    }
    wait_until(lambda: ready_messages(rabbit, applier_settings) == 0, 10.0, "the queues to be empty")


def _queues(settings: ApplierSettings) -> tuple[QueueDeclaration, ...]:
    return execution_queue_declarations(settings.execution_queue_prefix, settings.execution_partitions)


def active_appliers(rabbit: RabbitAdmin, settings: ApplierSettings) -> dict[int, list[int]]:
    """The pids of the appliers the broker shows active on each partition (one each, once settled)."""
    partitions = range(settings.execution_partitions)
    queues = [partition_queue(settings.execution_queue_prefix, partition) for partition in partitions]
    active: dict[int, list[int]] = {partition: [] for partition in partitions}
    for consumer in partition_consumers(rabbit.consumers(), queues):
        if consumer.active:
            _host, pid, _random = consumer.applier.rsplit("-", 2)
            active[consumer.partition].append(int(pid))
    return active


def split_over(rabbit: RabbitAdmin, settings: ApplierSettings, pids: set[int]) -> dict[int, int] | None:
    """Partition → pid of its one active applier, once the partitions are split evenly over ``pids``."""
    active = active_appliers(rabbit, settings)
    if any(len(appliers) != 1 for appliers in active.values()):
        return None
    owners = {partition: appliers[0] for partition, appliers in active.items()}
    counts = [list(owners.values()).count(pid) for pid in pids]
    return owners if set(owners.values()) == pids and max(counts) - min(counts) <= 1 else None


def test_appliers_split_the_partitions_and_a_killed_ones_go_to_the_others_within_seconds(
    plain_settings: Settings,
    applier_settings: ApplierSettings,
    engine: sa.Engine,
    rabbit: RabbitAdmin,
    tmp_path: Path,
) -> None:
    """Three appliers: each partition applied by one of them alone; one killed, two take its share."""
    rng = random.Random(17)
    log = tmp_path / "appliers.log"
    ports = [free_port() for _ in range(3)]
    appliers = [_start_applier(plain_settings, applier_settings, log, metrics_port=port) for port in ports]
    port_of = {applier.pid: port for applier, port in zip(appliers, ports, strict=True)}
    try:
        _each_applies_its_own_partitions(engine, plain_settings, applier_settings, rabbit, rng, port_of)

        appliers[0].send_signal(signal.SIGKILL)
        appliers[0].wait(timeout=10)
        del port_of[appliers[0].pid]
        # RabbitMQ hands the killed one's partitions on as its connection closes; the management
        # statistics show it within their interval (5 s).
        wait_until(
            lambda: all(
                len(pids) == 1 and pids[0] in port_of
                for pids in active_appliers(rabbit, applier_settings).values()
            ),
            10.0,
            "the killed applier's partitions to be active on another",
            every_s=0.5,
        )
        _each_applies_its_own_partitions(engine, plain_settings, applier_settings, rabbit, rng, port_of)
        for applier in appliers[1:]:
            applier.send_signal(signal.SIGTERM)
            assert applier.wait(timeout=20) == 0, log.read_text()
    finally:
        for applier in appliers:
            applier.kill()


#: Orders per partition whose reports :func:`_apply_some` publishes, one report each.
ORDERS_PER_PARTITION = 25


def _each_applies_its_own_partitions(
    engine: sa.Engine,
    settings: Settings,
    applier_settings: ApplierSettings,
    rabbit: RabbitAdmin,
    rng: random.Random,
    port_of: dict[int, int],
) -> None:
    """Once the appliers (pids of ``port_of``) split the partitions evenly, each applies exactly the
    reports sent to its own, and the split holds meanwhile."""
    owners = wait_until(
        lambda: split_over(rabbit, applier_settings, set(port_of)),
        DRAIN_TIMEOUT_S,
        f"{len(port_of)} appliers to split the partitions",
        every_s=0.5,
    )
    applied = _apply_some(engine, settings, applier_settings, rng, port_of)
    assert applied == {pid: ORDERS_PER_PARTITION * list(owners.values()).count(pid) for pid in port_of}
    assert split_over(rabbit, applier_settings, set(port_of)) == owners, "the split moved by itself"


def _apply_some(
    engine: sa.Engine,
    settings: Settings,
    applier_settings: ApplierSettings,
    rng: random.Random,
    port_of: dict[int, int],
) -> dict[int, float]:
    """Publish one report for each of :data:`ORDERS_PER_PARTITION` new orders per partition, wait
    until they are applied, and return how many each applier (by pid) applied, from its metrics."""
    before = {pid: _applied(port) for pid, port in port_of.items()}
    chosen: dict[int, list[Order]] = {partition: [] for partition in range(PARTITIONS)}
    while min(len(orders) for orders in chosen.values()) < ORDERS_PER_PARTITION:
        for order in store_orders(engine, 16):
            partition = partition_of(order.id, PARTITIONS)
            if len(chosen[partition]) < ORDERS_PER_PARTITION:
                chosen[partition].append(order)
    orders = [order for orders in chosen.values() for order in orders]
    reports = [story_of(order, rng)[0] for order in orders]
    resent = publish_reports(
        settings.rabbitmq_url, applier_settings.execution_queue_prefix, PARTITIONS, reports
    )
    assert resent == 0, "the broker refused reports: which applier applied them is no longer known"
    ids = [order.id for order in orders]
    wait_until(lambda: count_stored(engine, ids) == len(reports), DRAIN_TIMEOUT_S, "every report applied")

    def applied_since() -> dict[int, float] | None:
        # Each counter moves just after its applier's commit.
        applied = {pid: _applied(port) - before[pid] for pid, port in port_of.items()}
        return applied if sum(applied.values()) >= len(reports) else None

    return wait_until(applied_since, 10.0, "the appliers' counters to add up", every_s=0.2)


def _applied(port: int) -> float:
    """``orders_execution_reports_total{outcome="applied"}`` as an applier's metrics port serves it."""
    return scrape_port(port).get(("orders_execution_reports_total", frozenset({("outcome", "applied")})), 0.0)
