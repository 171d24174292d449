"""``orders-ingestor``: read the exchange's execution feed and hand every report to RabbitMQ, confirmed.

One process, one asyncio loop, three tasks:

- the *reader* follows the feed from the stored resume point (``FEED_URL?from=<last_feed_seq>``),
  reconnecting with exponential backoff and full jitter, and offers each report to the
  :class:`~orders_api.service_layer.ingest.FeedSequencer`, which drops repeats and holds
  reports that arrive early (at most ``max_held``); a report that does not parse is skipped,
  logged raw at ERROR and counted, at once when it names its ``feed_seq``, else once
  ``gap_passes`` connections in a row went past the gap it leaves
  (:class:`~orders_api.service_layer.ingest.GapWatch`), so that it cannot stall the feed;
- the *publisher* takes the next contiguous run of reports (up to ``INGEST_BATCH`` of them, or
  what came within ``INGEST_BATCH_WAIT_MS``), publishes it to the partition queues as one
  message per partition (:mod:`orders_api.adapters.rabbitmq.execution_messages`) with
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
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import websockets

from orders_api.adapters.exchange.feed_client import (
    ClientConnection,
    FeedReport,
    UnreadableReport,
    connect_feed,
    parse_frame,
    resume_url,
)
from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.feed_cursor import FeedCursor
from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher, OutgoingMessage, PublishError
from orders_api.adapters.rabbitmq.execution_messages import encode_reports
from orders_api.adapters.rabbitmq.execution_queues import (
    execution_queue_declarations,
    partition_of,
    partition_queue,
)
from orders_api.execution_feed.liveness_file import liveness_file_is_fresh
from orders_api.execution_feed.metrics import IngestorMetrics
from orders_api.execution_feed.metrics import serve as serve_metrics
from orders_api.logging_setup import configure_logging
from orders_api.service_layer.ingest import (
    DEFAULT_MAX_HELD,
    FeedSequencer,
    GapWatch,
    Taken,
    full_jitter_backoff,
)
from orders_api.settings.base import load
from orders_api.settings.ingestor import IngestorSettings

logger = logging.getLogger(__name__)

#: Seconds between two touches of the heartbeat file.
HEARTBEAT_EVERY_S = 1.0
#: Seconds the heartbeat file may age before ``--check`` calls the process stuck.
DEFAULT_MAX_HEARTBEAT_AGE_S = 30.0


@dataclass(frozen=True)
class Pacing:
    """The ingestor's fixed pacing: not settings (tests shrink it to meet gaps and backoffs sooner)."""

    #: Reconnect and republish backoff: the first ceiling and the cap, in seconds.
    backoff_base_s: float = 0.1
    backoff_cap_s: float = 3.0
    #: Seconds a gap in ``feed_seq`` may hold reports back before the reader reconnects to have
    #: the feed resend from the resume point.
    gap_timeout_s: float = 2.0
    #: Reports held (received, not yet published) at most. Without a gap, the reader stops
    #: reading there: the feed's socket then fills up and the feed slows down, rather than this
    #: process's memory. Behind a gap it reads on (only reading brings the missing report) but
    #: holds nothing beyond this many positions past the gap: the feed resends those later.
    max_held: int = DEFAULT_MAX_HELD
    #: Connections in a row that must go past the same gap, without filling it, before its
    #: positions are declared missing and skipped (:class:`~orders_api.service_layer.ingest.GapWatch`).
    gap_passes: int = 3


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
        pacing: Pacing = Pacing(),
    ) -> None:
        self._settings = settings
        self._pacing = pacing
        self._publisher = publisher
        self._cursor = cursor
        self._metrics = metrics or IngestorMetrics()
        self._sequencer: FeedSequencer[FeedReport] = FeedSequencer(0, pacing.max_held)
        self._gap_watch = GapWatch(pacing.gap_passes)
        #: The highest ``feed_seq`` read on the current connection: did it go past the gap?
        self._highest_read = 0
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
        self._sequencer = FeedSequencer(start, self._pacing.max_held)
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
            self._highest_read = 0
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
            self._skip_a_gap_that_never_fills()
            attempt = 0 if received else attempt + 1
            await asyncio.sleep(
                full_jitter_backoff(
                    attempt, base_s=self._pacing.backoff_base_s, cap_s=self._pacing.backoff_cap_s
                )
            )

    async def _read_connection(self, connection: ClientConnection) -> int:
        """Read frames until the connection ends or a gap outlives its timeout; return the reports read."""
        received = 0
        gap_seen_at: float | None = None
        while True:
            # Backpressure, except behind a gap: only reading on can bring the missing report.
            while self._sequencer.held >= self._pacing.max_held and not self._sequencer.has_gap():
                await asyncio.sleep(0.005)
            try:
                frame = await asyncio.wait_for(connection.recv(), timeout=self._pacing.gap_timeout_s)
            except TimeoutError:
                frame = None
            if frame is not None:
                items = parse_frame(frame)
                deferred = self._sequencer.deferred
                for item in items:
                    if isinstance(item, UnreadableReport):
                        self._unreadable(item)
                        continue
                    self._sequencer.offer(item.feed_seq, item)
                    self._highest_read = max(self._highest_read, item.feed_seq)
                received += len(items)
                self._metrics.received.inc(len(items))
                self._metrics.deferred.inc(self._sequencer.deferred - deferred)
                self._metrics.held.set(self._sequencer.held)
                if self._sequencer.ready():
                    self._something_ready.set()
            if self._sequencer.has_gap():
                now = time.monotonic()
                gap_seen_at = gap_seen_at or now
                if now - gap_seen_at > self._pacing.gap_timeout_s:
                    return received
            else:
                gap_seen_at = None

    def _unreadable(self, item: UnreadableReport) -> None:
        """Skip a report that will never parse, if its ``feed_seq`` says which; log it raw at ERROR."""
        extra = {"feed_seq": item.feed_seq, "error": item.error, "raw": item.raw}
        if item.feed_seq is None:
            logger.error("a report without a readable feed_seq, dropped: %s", item.error, extra=extra)
            return
        self._highest_read = max(self._highest_read, item.feed_seq)
        if self._sequencer.skip(item.feed_seq):
            logger.error(
                "skipping feed_seq %d: the report does not parse: %s", item.feed_seq, item.error, extra=extra
            )

    def _skip_a_gap_that_never_fills(self) -> None:
        """Once enough connections went past the same gap without filling it, skip its positions."""
        if not self._gap_watch.connection_ended(self._sequencer.gap_at, self._highest_read):
            return
        missing = self._sequencer.skip_gap()
        if not missing:
            return
        logger.error(
            "skipping feed_seq %d..%d: %d connections in a row went past them and no readable"
            " report came for them",
            missing.start,
            missing.stop - 1,
            self._pacing.gap_passes,
            extra={"first_feed_seq": missing.start, "last_feed_seq": missing.stop - 1},
        )
        self._something_ready.set()

    # The publisher -----------------------------------------------------------------------

    async def _publish(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._beat()
            try:
                await asyncio.wait_for(self._something_ready.wait(), timeout=HEARTBEAT_EVERY_S)
            except TimeoutError:
                continue
            if self._sequencer.ready() < self._settings.ingest_batch and not stop.is_set():
                await asyncio.sleep(self._settings.ingest_batch_wait_ms / 1000)
            run = self._sequencer.take(self._settings.ingest_batch)
            if run is None:
                self._something_ready.clear()
                continue
            await self._publish_until_confirmed(run, stop)

    async def _publish_until_confirmed(self, run: Taken[FeedReport], stop: asyncio.Event) -> None:
        messages = self._messages(run)
        attempt = 0
        while messages:
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
                        attempt, base_s=self._pacing.backoff_base_s, cap_s=self._pacing.backoff_cap_s
                    )
                )
                attempt += 1
                continue
            break
        self._sequencer.confirmed(run)
        self.published += len(run.reports)
        self._metrics.published.inc(len(run.reports))
        for reason in run.skipped.values():
            self._metrics.skipped.labels(reason.value).inc()
        self._metrics.resume_point.set(run.last)
        self._metrics.held.set(self._sequencer.held)

    def _messages(self, run: Taken[FeedReport]) -> list[OutgoingMessage]:
        """One message per partition the run touches, holding that partition's reports in feed order."""
        by_partition: dict[int, list[dict[str, Any]]] = {}
        for report in run.reports:
            partition = partition_of(report.order_id, self._settings.execution_partitions)
            by_partition.setdefault(partition, []).append(report.fields)
        return [
            OutgoingMessage(
                routing_key=partition_queue(self._settings.execution_queue_prefix, partition),
                body=encode_reports(fields),
                message_id=f"feed-{run.first}-{run.last}.{partition}",
            )
            for partition, fields in sorted(by_partition.items())
        ]

    def _beat(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat < HEARTBEAT_EVERY_S:
            return
        self._last_heartbeat = now
        self._settings.ingestor_heartbeat_file.touch()

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
                self._settings.ingest_cursor_save_ms / 1000
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


async def ingest(settings: IngestorSettings, stop: asyncio.Event) -> None:
    """Wire the ingestor to PostgreSQL and RabbitMQ and run it until ``stop`` is set."""
    engine = create_engine(settings, pool_size=2, application_name="orders-ingestor")
    publisher = ConfirmedPublisher(
        settings.rabbitmq_url,
        execution_queue_declarations(settings.execution_queue_prefix, settings.execution_partitions),
        connect_timeout_s=settings.connect_timeout_s,
        confirm_timeout_s=max(settings.confirm_timeout_s, 5.0),
        connection_role="orders-ingestor",
    )
    metrics = IngestorMetrics()
    serve_metrics(metrics.registry, settings.execution_metrics_host, settings.ingestor_metrics_port)
    try:
        await Ingestor(settings, publisher, FeedCursor(engine), metrics).run(stop)
    finally:
        publisher.close()
        engine.dispose()


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: ingest until SIGTERM or SIGINT, then exit 0; ``--check`` is the liveness probe."""
    parser = argparse.ArgumentParser(prog="orders-ingestor", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="liveness probe: is the heartbeat fresh?")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_HEARTBEAT_AGE_S)
    arguments = parser.parse_args(argv)
    settings = load(IngestorSettings)
    if arguments.check:
        sys.exit(0 if liveness_file_is_fresh(settings.ingestor_heartbeat_file, arguments.max_age) else 1)
    configure_logging(settings)
    logging.getLogger("pika").setLevel(logging.WARNING)
    logging.getLogger("websockets").setLevel(logging.WARNING)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await ingest(settings, stop)

    asyncio.run(serve())
