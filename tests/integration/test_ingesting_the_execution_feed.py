"""The ingestor against a real WebSocket feed, a real RabbitMQ vhost and a real database.

Each test has partition queues of its own (a unique prefix) and a feed cursor of its own, and
deletes the queues afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pytest
import sqlalchemy as sa

from orders_api.adapters.postgres.feed_cursor import EXCHANGE_FEED, FeedCursor
from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher, OutgoingMessage
from orders_api.adapters.rabbitmq.execution_messages import decode_reports
from orders_api.adapters.rabbitmq.execution_queues import (
    execution_queue_declarations,
    partition_of,
    partition_queue,
)
from orders_api.execution_feed.ingestor import Ingestor, Pacing
from orders_api.execution_feed.metrics import IngestorMetrics
from orders_api.settings.ingestor import IngestorSettings
from orders_testkit.processes import free_port
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.feed_server import Faults, FeedServer, make_reports
from tests.prometheus_samples import scrape_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def queue_prefix(rabbit: RabbitAdmin) -> Iterator[str]:
    """A prefix of this test's own for the partition queues, whose queues are deleted afterwards."""
    prefix = f"order-executions.test-{uuid.uuid4().hex[:8]}"
    yield prefix
    rabbit.delete_queues_if_present(*(partition_queue(prefix, partition) for partition in range(8)))


class CheckedCursor:
    """The real cursor, which also records any resume point stored past a report not yet confirmed."""

    def __init__(self, cursor: FeedCursor, confirmed: set[int]) -> None:
        self._cursor = cursor
        self._confirmed = confirmed
        #: Poison the test put in the feed: the ingestor skips these rather than confirming them.
        self.skippable: set[int] = set()
        self.violations: list[int] = []

    def load(self) -> int:
        return self._cursor.load()

    def store(self, last_feed_seq: int) -> None:
        missing = set(range(1, last_feed_seq + 1)) - self._confirmed - self.skippable
        if missing:
            self.violations.append(last_feed_seq)
        self._cursor.store(last_feed_seq)


class RecordingPublisher:
    """The real publisher, which also records the ``feed_seq`` of every report RabbitMQ confirmed."""

    def __init__(self, publisher: ConfirmedPublisher) -> None:
        self._publisher = publisher
        self.confirmed: set[int] = set()
        #: Every report confirmed, a republished one as often as it was.
        self.confirmed_reports: list[int] = []
        #: Messages confirmed: several reports travel in one.
        self.messages = 0

    def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        self._publisher.publish_all(messages)
        confirmed = [report["feed_seq"] for message in messages for report in reports_of(message)]
        self.confirmed.update(confirmed)
        self.confirmed_reports.extend(confirmed)
        self.messages += len(messages)


def reports_of(message: OutgoingMessage | bytes) -> list[dict[str, Any]]:
    """The report objects a partition message holds."""
    reports = []
    for report in decode_reports(message.body if isinstance(message, OutgoingMessage) else message):
        assert isinstance(report, dict), report
        reports.append(report)
    return reports


@contextmanager
def running(ingestor: Ingestor) -> Iterator[Ingestor]:
    """Run ``ingestor`` in a thread of its own; stop it (as SIGTERM would) on the way out."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(ingestor.run(stop))
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, name="ingestor", daemon=True)
    thread.start()
    try:
        yield ingestor
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=15)
        loop.close()
    assert not thread.is_alive(), "the ingestor did not stop"
    assert not errors, errors


def drain(rabbitmq_url: str, prefix: str, partitions: int) -> dict[int, list[dict[str, Any]]]:
    """Every report in each partition queue, in queue order (a message holds several).

    Consumed, since a quorum queue with a single active consumer refuses ``basic.get``.
    """
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1000)
        drained: dict[int, list[dict[str, Any]]] = {}
        for partition in range(partitions):
            bodies: list[dict[str, Any]] = []
            for method, _properties, body in channel.consume(
                partition_queue(prefix, partition), inactivity_timeout=0.5
            ):
                if method is None:
                    break
                bodies.extend(reports_of(body))
                channel.basic_ack(method.delivery_tag)
            channel.cancel()
            drained[partition] = bodies
        return drained
    finally:
        connection.close()


def make_ingestor(
    feed: FeedServer,
    rabbitmq_url: str,
    engine: sa.Engine,
    prefix: str,
    partitions: int,
    metrics: IngestorMetrics | None = None,
) -> tuple[Ingestor, RecordingPublisher, CheckedCursor, ConfirmedPublisher]:
    publisher = ConfirmedPublisher(
        rabbitmq_url,
        execution_queue_declarations(prefix, partitions),
        connect_timeout_s=2.0,
        confirm_timeout_s=5.0,
        connection_role="orders-ingestor",
    )
    recording = RecordingPublisher(publisher)
    cursor = CheckedCursor(FeedCursor(engine, feed=f"test-{uuid.uuid4().hex}"), recording.confirmed)
    settings = IngestorSettings(
        rabbitmq_url=rabbitmq_url,
        feed_url=feed.url,
        execution_queue_prefix=prefix,
        execution_partitions=partitions,
    )
    pacing = Pacing(
        gap_timeout_s=0.3,
        # Small, so that backpressure meets gaps in the feed.
        max_held=100,
        backoff_cap_s=0.3,
        backoff_base_s=0.02,
    )
    return Ingestor(settings, recording, cursor, metrics, pacing), recording, cursor, publisher


def test_every_report_reaches_its_partition_once_in_order_despite_repeats_reordering_gaps_and_drops(
    rabbitmq_url: str, engine: sa.Engine, queue_prefix: str
) -> None:
    reports = make_reports(400)
    faults = Faults(frame_size=40, repeat=0.1, shuffle_window=3, skip=0.005, drop_after_frames=5)
    metrics = IngestorMetrics()
    with FeedServer(reports, faults) as feed:
        ingestor, recording, cursor, publisher = make_ingestor(
            feed, rabbitmq_url, engine, queue_prefix, 4, metrics
        )
        try:
            with running(ingestor):
                wait_until(
                    lambda: cursor.load() == len(reports),
                    60,
                    "the resume point to reach the end",
                    state=lambda: (
                        f"stored resume point {cursor.load()}, watermark {ingestor.watermark},"
                        f" {ingestor.published} reports confirmed, {ingestor.failed_publishes} publishes"
                        f" failed, {feed.connections} feed connections"
                    ),
                )
        finally:
            publisher.close()
        assert feed.connections > 3
    assert recording.messages < len(reports) / 2, "a partition's reports of one run share a message"
    counted = {
        name: metrics.registry.get_sample_value(name) or 0.0
        for name in (
            "orders_feed_resume_point",
            "orders_feed_reports_received_total",
            "orders_feed_reports_published_total",
            "orders_feed_disconnects_total",
            "orders_feed_connected",
        )
    }
    assert counted["orders_feed_resume_point"] == len(reports)
    assert counted["orders_feed_reports_received_total"] > len(reports)  # the feed's repeats
    assert counted["orders_feed_reports_published_total"] == len(recording.confirmed_reports)
    assert counted["orders_feed_disconnects_total"] >= feed.connections - 1
    assert counted["orders_feed_connected"] == 0  # stopped
    assert cursor.violations == []
    drained = drain(rabbitmq_url, queue_prefix, 4)
    for partition, bodies in drained.items():
        expected = [
            report for report in reports if partition_of(uuid.UUID(report["order_id"]), 4) == partition
        ]
        assert bodies == expected


def test_reports_sent_beyond_what_the_ingestor_holds_are_fetched_again_when_the_feed_has_no_more(
    rabbitmq_url: str, engine: sa.Engine, queue_prefix: str
) -> None:
    # One frame of 400 reports against a bound of 100 held: the 300 beyond are not held, and the
    # feed, having sent everything, keeps the connection open and sends nothing more. Only a
    # reconnect brings them again.
    reports = make_reports(400)
    with FeedServer(reports, Faults(frame_size=400)) as feed:
        ingestor, _recording, cursor, publisher = make_ingestor(feed, rabbitmq_url, engine, queue_prefix, 2)
        try:
            with running(ingestor):
                wait_until(
                    lambda: cursor.load() == len(reports),
                    30,
                    "the resume point to reach the end",
                    state=lambda: f"watermark {ingestor.watermark}, {feed.connections} feed connections",
                )
        finally:
            publisher.close()
        assert feed.connections >= 2


def test_nacked_publishes_hold_the_resume_point_until_the_broker_takes_them(
    rabbitmq_url: str, rabbit: RabbitAdmin, engine: sa.Engine, queue_prefix: str
) -> None:
    reports = make_reports(20)
    queue = partition_queue(queue_prefix, 0)
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq_url))
    channel = connection.channel()
    (declaration,) = execution_queue_declarations(queue_prefix, 1)
    channel.queue_declare(queue, durable=True, arguments=declaration.arguments)
    channel.basic_publish("", queue, b'{"filler": true}')
    connection.close()
    policy = f"full-{queue}"
    rabbit.set_policy(policy, f"^{queue}$", {"max-length": 0, "overflow": "reject-publish"})
    time.sleep(0.5)
    with FeedServer(reports) as feed, policy_removed_after(rabbit, policy):
        ingestor, recording, cursor, publisher = make_ingestor(feed, rabbitmq_url, engine, queue_prefix, 1)
        try:
            with running(ingestor):
                wait_until(lambda: ingestor.failed_publishes >= 2, 20, "publishes to be nacked")
                assert ingestor.watermark == 0
                assert cursor.load() == 0
                assert recording.confirmed == set()
                rabbit.delete_policy(policy)
                wait_until(lambda: cursor.load() == len(reports), 20, "the resume point to reach the end")
        finally:
            publisher.close()
    assert cursor.violations == []
    (bodies,) = drain(rabbitmq_url, queue_prefix, 1).values()
    assert bodies[0] == {"filler": True}
    delivered = [body for body in bodies[1:]]
    assert {body["exec_id"] for body in delivered} == {report["exec_id"] for report in reports}
    assert_in_order_per_order(delivered)


@contextmanager
def policy_removed_after(rabbit: RabbitAdmin, policy: str) -> Iterator[None]:
    """Delete ``policy`` on the way out if the test has not."""
    try:
        yield
    finally:
        rabbit.delete_policies_if_present(policy)


def assert_in_order_per_order(bodies: list[dict[str, Any]]) -> None:
    """Each order's reports, first copies only, come in ``seq`` order (repeats allowed after them)."""
    seen: set[str] = set()
    last_seq: dict[str, int] = {}
    for body in bodies:
        if body["exec_id"] in seen:
            continue
        seen.add(body["exec_id"])
        assert body["seq"] == last_seq.get(body["order_id"], 0) + 1, body
        last_seq[body["order_id"]] = body["seq"]


def test_an_ingestor_killed_mid_stream_loses_nothing_after_a_restart(
    database_url: str, rabbitmq_url: str, engine: sa.Engine, queue_prefix: str, tmp_path: Path
) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM feed_cursors WHERE feed = :feed"), {"feed": EXCHANGE_FEED})
    cursor = FeedCursor(engine)
    reports = make_reports(3000)
    command = [str(Path(sys.executable).parent / "orders-ingestor")]
    with FeedServer(reports, Faults(frame_size=50, pause_s=0.01, repeat=0.02)) as feed:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            "FEED_URL": feed.url,
            "EXECUTION_QUEUE_PREFIX": queue_prefix,
            "EXECUTION_PARTITIONS": "4",
            "INGESTOR_HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
        }
        first = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: cursor.load() > 0, 30, "the first ingestor to make progress")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        killed_at = cursor.load()
        assert 0 < killed_at < len(reports), "the ingestor must be killed mid-stream"
        second = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: cursor.load() == len(reports), 60, "the restarted ingestor to reach the end")
            assert (tmp_path / "heartbeat").exists()
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=20) == 0
    drained = drain(rabbitmq_url, queue_prefix, 4)
    delivered = [body for bodies in drained.values() for body in bodies]
    assert {body["exec_id"] for body in delivered} == {report["exec_id"] for report in reports}
    for bodies in drained.values():
        assert_in_order_per_order(bodies)


def test_one_ingestor_process_takes_a_fast_feed_at_thousands_of_reports_per_second(
    database_url: str, rabbitmq_url: str, rabbit: RabbitAdmin, engine: sa.Engine, queue_prefix: str
) -> None:
    """The ``orders-ingestor`` process alone (the feed runs in this one), timed once it has started.

    Its RabbitMQ connection says whose it is.
    """
    with engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM feed_cursors WHERE feed = :feed"), {"feed": EXCHANGE_FEED})
    cursor = FeedCursor(engine)
    reports = make_reports(25_000)
    with FeedServer(reports, Faults(frame_size=500)) as feed:
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "RABBITMQ_URL": rabbitmq_url,
            "FEED_URL": feed.url,
            "EXECUTION_QUEUE_PREFIX": queue_prefix,
            "EXECUTION_PARTITIONS": "8",
            "INGESTOR_METRICS_PORT": str(metrics_port := free_port()),
        }
        ingestor = subprocess.Popen(
            [str(Path(sys.executable).parent / "orders-ingestor")], env=env, stderr=subprocess.DEVNULL
        )
        try:
            wait_until(lambda: cursor.load() > 0, 30, "the ingestor to make progress")
            first, started = cursor.load(), time.monotonic()
            wait_until(lambda: cursor.load() == len(reports), 120, "the whole feed to be confirmed")
            elapsed = time.monotonic() - started
            name = f"orders-ingestor {socket.gethostname()} pid {ingestor.pid}"
            wait_until(lambda: name in rabbit.connection_names(), 15, f"a connection named {name!r}")
            samples = scrape_port(metrics_port)
            assert samples[("orders_feed_resume_point", frozenset())] == len(reports)
            assert samples[("orders_feed_connected", frozenset())] == 1
            assert samples[("orders_feed_reports_published_total", frozenset())] >= len(reports)
        finally:
            ingestor.send_signal(signal.SIGTERM)
            assert ingestor.wait(timeout=20) == 0
    rate = (len(reports) - first) / elapsed
    print(f"\ningested {len(reports) - first} reports in {elapsed:.2f} s: {rate:,.0f} reports/s")
    assert rate > 5000


def follow_to_the_end(
    feed: FeedServer,
    rabbitmq_url: str,
    engine: sa.Engine,
    prefix: str,
    metrics: IngestorMetrics,
    poison: set[int],
) -> tuple[RecordingPublisher, CheckedCursor, int]:
    """Run an ingestor until its resume point reaches the feed's end; the most reports it held meanwhile."""
    ingestor, recording, cursor, publisher = make_ingestor(feed, rabbitmq_url, engine, prefix, 4, metrics)
    cursor.skippable = poison
    most_held = 0

    def at_the_end() -> bool:
        nonlocal most_held
        most_held = max(most_held, int(metrics.registry.get_sample_value("orders_feed_reports_held") or 0))
        return cursor.load() == len(feed.reports)

    try:
        with running(ingestor):
            wait_until(at_the_end, 30, "the resume point to pass the poison and reach the end")
    finally:
        publisher.close()
    return recording, cursor, most_held


def skipped(metrics: IngestorMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("orders_feed_reports_skipped_total", {"reason": reason}) or 0.0


def test_a_report_that_does_not_parse_but_names_its_feed_seq_is_skipped_alone_and_the_feed_moves_on(
    rabbitmq_url: str, engine: sa.Engine, queue_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Catches one report stalling the ingestor for good: its whole frame was dropped, the gap it
    left never filled, and every reconnect read the same frame again."""
    reports = make_reports(60)
    poison = {7: {"feed_seq": 8, "exec_id": "no-order"}, 30: {**reports[30], "order_id": "nope"}}
    feed_reports = [poison.get(index, report) for index, report in enumerate(reports)]
    metrics = IngestorMetrics()
    with FeedServer(feed_reports, Faults(frame_size=5)) as feed:
        recording, cursor, _ = follow_to_the_end(feed, rabbitmq_url, engine, queue_prefix, metrics, {8, 31})
    assert cursor.violations == []
    assert skipped(metrics, "malformed") == 2
    assert recording.confirmed == set(range(1, len(reports) + 1)) - {8, 31}
    drained = drain(rabbitmq_url, queue_prefix, 4)
    for partition, bodies in drained.items():
        assert bodies == [
            report
            for index, report in enumerate(reports)
            if index not in poison and partition_of(uuid.UUID(report["order_id"]), 4) == partition
        ]
    raw = [getattr(record, "raw", "") for record in caplog.records if record.levelname == "ERROR"]
    assert [json.loads(text) for text in raw] == list(poison.values()), "each skipped report logged raw"


def test_a_report_whose_feed_seq_cannot_be_read_is_declared_missing_after_a_bounded_wait(
    rabbitmq_url: str, engine: sa.Engine, queue_prefix: str
) -> None:
    """The gap such a report leaves is skipped once several fresh connections, each resending from
    the resume point, passed it without filling it; meanwhile the reports held stay within the bound."""
    reports = make_reports(300)
    feed_reports = [
        {**report, "feed_seq": "eleven"} if index == 10 else report for index, report in enumerate(reports)
    ]
    metrics = IngestorMetrics()
    with FeedServer(feed_reports, Faults(frame_size=5)) as feed:
        recording, cursor, most_held = follow_to_the_end(
            feed, rabbitmq_url, engine, queue_prefix, metrics, {11}
        )
    assert cursor.violations == []
    assert skipped(metrics, "missing") == 1
    assert recording.confirmed == set(range(1, len(reports) + 1)) - {11}
    assert most_held <= 100, "max_held bounds what is held behind a gap"
