"""``orders-ingestor``: read the exchange's execution feed and hand every report to RabbitMQ, confirmed.

One process, one asyncio loop, three tasks:

- the *reader* follows the feed from the stored resume point (``FEED_URL?from=<last_feed_seq>``),
  reconnecting with exponential backoff and full jitter, and offers each report to the
  :class:`~orders_api.service_layer.ingest.FeedSequencer`, which drops repeats and holds
  reports that arrive early;
- the *publisher* takes the next contiguous run of reports (up to ``INGEST_BATCH`` of them, or
  what came within ``INGEST_BATCH_WAIT_MS``), publishes it to the partition queues as one
  message per partition (:mod:`orders_api.adapters.execution_messages`) with
  :meth:`ConfirmedPublisher.publish_all` in a thread, and only once every confirm is in moves
  the resume point past it; a failed run (nack, broker down) is published again, whole and in
  the same order, after a backoff, so a later report of an order never overtakes an earlier one;
- the *saver* stores the resume point in ``feed_cursors`` every ``INGEST_CURSOR_SAVE_MS``.

Liveness: the publisher touches ``INGESTOR_HEARTBEAT_FILE`` at least every second while its
loop turns (also while it backs off from a broker that is down: the process is alive; restarting
it would not help). A Kubernetes exec probe checks the file's age. Metrics (the connection, the
resume point, reports received and published) on ``INGESTOR_METRICS_PORT`` (9192).

SIGTERM or SIGINT: stop reading, let the run in flight be confirmed (one more attempt if it
fails), store the resume point, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import websockets

from orders_api.adapters.confirmed_publisher import ConfirmedPublisher, OutgoingMessage, PublishError
from orders_api.adapters.database import create_engine
from orders_api.adapters.execution_messages import encode_reports
from orders_api.adapters.execution_queues import (
    DEFAULT_EXECUTION_PARTITIONS,
    DEFAULT_EXECUTION_QUEUE_PREFIX,
    execution_queue_declarations,
    execution_queues_from_env,
    partition_of,
    partition_queue,
)
from orders_api.adapters.feed_client import (
    ClientConnection,
    FeedReport,
    MalformedReportError,
    connect_feed,
    parse_frame,
    resume_url,
)
from orders_api.adapters.feed_cursor import FeedCursor
from orders_api.config import Settings
from orders_api.entrypoints.execution_metrics import DEFAULT_METRICS_HOST, IngestorMetrics
from orders_api.entrypoints.execution_metrics import serve as serve_metrics
from orders_api.entrypoints.heartbeat import heartbeat_is_fresh
from orders_api.logging_setup import configure_logging
from orders_api.service_layer.ingest import FeedSequencer, Taken, full_jitter_backoff

logger = logging.getLogger(__name__)

#: The feed's URL without ``from``; the simulator's default address.
DEFAULT_FEED_URL = "ws://127.0.0.1:8765/executions"
#: Seconds between two touches of the heartbeat file.
HEARTBEAT_EVERY_S = 1.0
#: Seconds the heartbeat file may age before ``--check`` calls the process stuck.
DEFAULT_MAX_HEARTBEAT_AGE_S = 30.0


@dataclass(frozen=True)
class IngestorSettings:
    """The ingestor's knobs, read from the environment (defaults suit ``make run``)."""

    feed_url: str = DEFAULT_FEED_URL
    queue_prefix: str = DEFAULT_EXECUTION_QUEUE_PREFIX
    partitions: int = DEFAULT_EXECUTION_PARTITIONS
    #: Most reports in one confirmed publish.
    batch_size: int = 500
    #: Seconds the publisher waits for a fuller batch once a report is ready.
    batch_wait_s: float = 0.02
    #: Seconds between two stores of the resume point.
    cursor_save_s: float = 0.1
    #: Reconnect and republish backoff: the first ceiling and the cap, in seconds.
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 3.0
    #: Seconds a gap in ``feed_seq`` may hold reports back before the reader reconnects to have
    #: the feed resend from the resume point.
    gap_timeout_s: float = 2.0
    #: Reports held (received, not yet published) above which the reader stops reading: the
    #: feed's socket then fills up and the feed slows down, rather than this process's memory.
    max_held: int = 50_000
    #: Touched about every second while the publisher loop runs; ``orders-ingestor --check`` reads it.
    heartbeat_file: str = str(Path(tempfile.gettempdir()) / "orders-ingestor.heartbeat")
    #: Where the metrics are served (:mod:`orders_api.entrypoints.execution_metrics`); port 0: nowhere.
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_port: int = 9192

    @classmethod
    def from_env(cls) -> IngestorSettings:
        """Settings from ``FEED_URL``, ``EXECUTION_*``, ``INGEST_*``, ``INGESTOR_*``."""
        env = os.environ
        defaults = cls()
        queue_prefix, partitions = execution_queues_from_env(env)
        return cls(
            feed_url=env.get("FEED_URL", defaults.feed_url),
            queue_prefix=queue_prefix,
            partitions=partitions,
            batch_size=int(env.get("INGEST_BATCH", defaults.batch_size)),
            batch_wait_s=float(env.get("INGEST_BATCH_WAIT_MS", defaults.batch_wait_s * 1000)) / 1000,
            cursor_save_s=float(env.get("INGEST_CURSOR_SAVE_MS", defaults.cursor_save_s * 1000)) / 1000,
            heartbeat_file=env.get("INGESTOR_HEARTBEAT_FILE", defaults.heartbeat_file),
            metrics_host=env.get("EXECUTION_METRICS_HOST", defaults.metrics_host),
            metrics_port=int(env.get("INGESTOR_METRICS_PORT", defaults.metrics_port)),
        )


class BatchPublisher(Protocol):
    """What the ingestor needs of :class:`ConfirmedPublisher`."""

    def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish ``messages`` in order and return once every one is confirmed, or raise ``PublishError``."""


class ResumePointStore(Protocol):
    """What the ingestor needs of :class:`FeedCursor`."""

    def load(self) -> int:
        """The stored resume point, 0 if none."""

    def store(self, last_feed_seq: int) -> None:
        """Store ``last_feed_seq`` unless a greater one is stored."""


class Ingestor:
    """Follows the feed and publishes its reports, confirmed and in order, to the partition queues."""

    def __init__(
        self,
        settings: IngestorSettings,
        publisher: BatchPublisher,
        cursor: ResumePointStore,
        metrics: IngestorMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._publisher = publisher
        self._cursor = cursor
        self._metrics = metrics or IngestorMetrics()
        self._sequencer: FeedSequencer[FeedReport] = FeedSequencer(0)
        self._something_ready = asyncio.Event()
        self._last_heartbeat = 0.0
        #: Reports confirmed by RabbitMQ since the start, and failed publishes: for tests and logs.
        self.published = 0
        self.failed_publishes = 0

    @property
    def watermark(self) -> int:
        """The resume point: every report up to this ``feed_seq`` is confirmed by RabbitMQ."""
        return self._sequencer.watermark

    async def run(self, stop: asyncio.Event) -> None:
        """Ingest until ``stop`` is set, then finish the run in flight and store the resume point."""
        start = await asyncio.to_thread(self._cursor.load)
        self._sequencer = FeedSequencer(start)
        self._metrics.resume_point.set(start)
        logger.info("ingestor starting from feed_seq %d", start, extra={"feed_seq": start})
        reader = asyncio.create_task(self._read(), name="feed-reader")
        saver = asyncio.create_task(self._save_periodically(), name="cursor-saver")
        publisher = asyncio.create_task(self._publish(stop), name="publisher")
        stopped = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({reader, publisher, stopped}, return_when=asyncio.FIRST_COMPLETED)
        # A crashed task stops the whole process too (Kubernetes restarts it); the rest winds down.
        stop.set()
        reader.cancel()
        self._something_ready.set()
        await asyncio.gather(reader, return_exceptions=True)
        await asyncio.gather(publisher, return_exceptions=True)
        saver.cancel()
        await asyncio.gather(saver, return_exceptions=True)
        stopped.cancel()
        await asyncio.to_thread(self._cursor.store, self._sequencer.watermark)
        logger.info("ingestor stopped at feed_seq %d", self.watermark, extra={"feed_seq": self.watermark})
        for task in done:
            if task is not stopped and (error := task.exception()) is not None:
                raise error

    # The reader --------------------------------------------------------------------------

    async def _read(self) -> None:
        attempt = 0
        while True:
            url = resume_url(self._settings.feed_url, self._sequencer.watermark)
            received = 0
            try:
                async with connect_feed(url, open_timeout_s=5.0) as connection:
                    self._metrics.connected.set(1)
                    logger.info(
                        "feed connected, resuming after feed_seq %d",
                        self._sequencer.watermark,
                        extra={"feed_url": url, "feed_seq": self._sequencer.watermark},
                    )
                    received = await self._read_connection(connection)
                    logger.info("feed asked to reconnect: a gap in feed_seq did not fill")
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as error:
                logger.warning("feed disconnected: %s", error, extra={"feed_url": url})
            finally:
                self._metrics.connected.set(0)
            self._metrics.disconnects.inc()
            attempt = 0 if received else attempt + 1
            await asyncio.sleep(
                full_jitter_backoff(
                    attempt, base_s=self._settings.backoff_base_s, cap_s=self._settings.backoff_cap_s
                )
            )

    async def _read_connection(self, connection: ClientConnection) -> int:
        """Read frames until the connection ends or a gap outlives its timeout; return the reports read."""
        received = 0
        gap_seen_at: float | None = None
        while True:
            # Backpressure, except behind a gap: only reading on can bring the missing report.
            while self._sequencer.held >= self._settings.max_held and not self._sequencer.has_gap():
                await asyncio.sleep(0.005)
            try:
                frame = await asyncio.wait_for(connection.recv(), timeout=self._settings.gap_timeout_s)
            except TimeoutError:
                frame = None
            if frame is not None:
                try:
                    reports = parse_frame(frame)
                except MalformedReportError as error:
                    logger.error("dropping a malformed frame: %s", error)
                    continue
                for report in reports:
                    self._sequencer.offer(report.feed_seq, report)
                received += len(reports)
                self._metrics.received.inc(len(reports))
                self._metrics.held.set(self._sequencer.held)
                if self._sequencer.ready():
                    self._something_ready.set()
            if self._sequencer.has_gap():
                now = time.monotonic()
                gap_seen_at = gap_seen_at or now
                if now - gap_seen_at > self._settings.gap_timeout_s:
                    return received
            else:
                gap_seen_at = None

    # The publisher -----------------------------------------------------------------------

    async def _publish(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._beat()
            try:
                await asyncio.wait_for(self._something_ready.wait(), timeout=HEARTBEAT_EVERY_S)
            except TimeoutError:
                continue
            if self._sequencer.ready() < self._settings.batch_size and not stop.is_set():
                await asyncio.sleep(self._settings.batch_wait_s)
            run = self._sequencer.take(self._settings.batch_size)
            if run is None:
                self._something_ready.clear()
                continue
            await self._publish_until_confirmed(run, stop)

    async def _publish_until_confirmed(self, run: Taken[FeedReport], stop: asyncio.Event) -> None:
        messages = self._messages(run)
        attempt = 0
        while True:
            try:
                await asyncio.to_thread(self._publisher.publish_all, messages)
            except PublishError as error:
                self.failed_publishes += 1
                self._metrics.publish_failures.inc()
                logger.warning(
                    "publishing feed_seq %d..%d failed, will retry: %s",
                    run.first,
                    run.last,
                    error,
                    extra={"attempt": attempt},
                )
                if stop.is_set() and attempt >= 1:
                    return
                self._beat()
                await asyncio.sleep(
                    full_jitter_backoff(
                        attempt, base_s=self._settings.backoff_base_s, cap_s=self._settings.backoff_cap_s
                    )
                )
                attempt += 1
                continue
            self._sequencer.confirmed(run)
            self.published += len(run.reports)
            self._metrics.published.inc(len(run.reports))
            self._metrics.resume_point.set(run.last)
            self._metrics.held.set(self._sequencer.held)
            return

    def _messages(self, run: Taken[FeedReport]) -> list[OutgoingMessage]:
        """One message per partition the run touches, holding that partition's reports in feed order."""
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for report in run.reports:
            partition = partition_of(report.order_id, self._settings.partitions)
            by_partition.setdefault(partition, []).append(report.fields)
        return [
            OutgoingMessage(
                routing_key=partition_queue(self._settings.queue_prefix, partition),
                body=encode_reports(fields),
                message_id=f"feed-{run.first}-{run.last}.{partition}",
            )
            for partition, fields in sorted(by_partition.items())
        ]

    def _beat(self) -> None:
        path = self._settings.heartbeat_file
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_EVERY_S:
            return
        self._last_heartbeat = now
        Path(path).touch()

    # The saver ---------------------------------------------------------------------------

    async def _save_periodically(self) -> None:
        """Store the resume point when it moved; while PostgreSQL fails, retry less and less often.

        Ingesting goes on meanwhile: an older stored resume point only means more repeats after
        a restart, which the applier drops.
        """
        saved = self._sequencer.watermark
        failures = 0
        while True:
            await asyncio.sleep(
                self._settings.cursor_save_s
                + full_jitter_backoff(failures, base_s=0.0 if not failures else 0.5, cap_s=5.0)
            )
            watermark = self._sequencer.watermark
            if watermark == saved:
                continue
            try:
                await asyncio.to_thread(self._cursor.store, watermark)
            except Exception:
                logger.exception("storing the resume point failed; it will be stored later")
                failures += 1
                continue
            saved, failures = watermark, 0


async def ingest(settings: Settings, ingestor_settings: IngestorSettings, stop: asyncio.Event) -> None:
    """Wire the ingestor to PostgreSQL and RabbitMQ and run it until ``stop`` is set."""
    engine = create_engine(settings, pool_size=2, application_name="orders-ingestor")
    publisher = ConfirmedPublisher(
        settings.rabbitmq_url,
        execution_queue_declarations(ingestor_settings.queue_prefix, ingestor_settings.partitions),
        connect_timeout_s=settings.connect_timeout_s,
        confirm_timeout_s=max(settings.confirm_timeout_s, 5.0),
        connection_role="orders-ingestor",
    )
    metrics = IngestorMetrics()
    serve_metrics(metrics.registry, ingestor_settings.metrics_host, ingestor_settings.metrics_port)
    try:
        await Ingestor(ingestor_settings, publisher, FeedCursor(engine), metrics).run(stop)
    finally:
        publisher.close()
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ingest until SIGTERM or SIGINT, then exit 0; ``--check`` is the liveness probe."""
    parser = argparse.ArgumentParser(prog="orders-ingestor", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="liveness probe: is the heartbeat fresh?")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_HEARTBEAT_AGE_S)
    arguments = parser.parse_args(argv)
    if arguments.check:
        fresh = heartbeat_is_fresh(Path(IngestorSettings.from_env().heartbeat_file), arguments.max_age)
        sys.exit(0 if fresh else 1)
    configure_logging()
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await ingest(Settings.from_env(), IngestorSettings.from_env(), stop)

    asyncio.run(serve())
