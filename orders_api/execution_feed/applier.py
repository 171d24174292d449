"""``orders-applier``: applies the exchange's execution reports from the partition queues to PostgreSQL.

A dedicated pika consumer rather than a Dramatiq actor: Dramatiq hands an actor one message at a
time and acks each once its actor returns, so each message would cost a transaction of its own
(a COMMIT and its WAL flush). Here one process consumes every partition queue on one channel
(each message holds a partition's share of one of the ingestor's runs,
:mod:`orders_api.adapters.rabbitmq.execution_messages`), gathers deliveries until they hold
:data:`BATCH_MAX` reports or :data:`BATCH_WINDOW_S` has passed,
applies them in one transaction (:func:`orders_api.adapters.postgres.execution_ledger.apply_reports`)
and only after its COMMIT acks them all with one ``basic.ack(multiple=True)`` up to the last
delivery tag. A crash before the ack gets the whole batch redelivered, and the ledger
(``executions``, unique ``exec_id``) makes the second application a no-op: exactly once.

Several appliers split the partitions between them
(:mod:`orders_api.execution_feed.partition_assignment`): each registers on every partition queue,
RabbitMQ keeps one of them active per queue, and every :data:`REBALANCE_INTERVAL_S` each applier
gives up, after applying and acking the batch in hand, the partitions the assignment gives to
another. A killed applier's partitions go to a waiting one as soon as its connection closes.

Choices, and why:

- A malformed message or report is logged (whole) and acked: it can never become valid, and
  requeueing it would block its partition (one active consumer) forever; the partition
  queues' arguments are the shared contract, so they carry no dead-letter exchange.
- A report for an unknown order is logged and acked too. A worker places an order on the
  exchange only after the order committed (it waits on the order's creation lock), so the
  exchange cannot report on an order the database does not have yet: such a report belongs to
  no order of ours and waiting would never help.
- A database error acks nothing: the same batch is retried, with a growing pause, until it
  commits; the broker keeps the messages meanwhile (and redelivers them if this process dies).
  Except a *data* error (a numeric overflow from an absurd fill, text the driver cannot encode):
  that fails the same way on every retry and would stall every partition behind one report, so
  the batch is applied one report per transaction instead, and a report the database refuses
  alone is logged whole and dropped, like a malformed one
  (:mod:`orders_api.adapters.postgres.execution_batches`).
- SIGTERM (and SIGINT) let the batch in hand finish, commit and be acked; then the process exits.

Liveness for Kubernetes is a heartbeat file (``APPLIER_HEARTBEAT_FILE``), touched by the
consuming loop itself whenever it goes round (and between tries of a batch the database
refused, which a restart would not cure), so a stuck loop stops touching it;
``orders-applier --check`` fails once it is older than ``--max-age``. A file rather than an
HTTP ``/healthz``, as the workers do: the HTTP port it has serves metrics
(``APPLIER_METRICS_PORT``, 9193: reports by outcome, batches, the lag from report to commit), and
a probe there would only prove that prometheus_client's thread answers.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType

import pika
import pika.channel
import pika.exceptions
import pika.spec
import sqlalchemy as sa
from pika.adapters.blocking_connection import BlockingChannel

from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.postgres.execution_batches import apply_batch
from orders_api.adapters.postgres.execution_ledger import AppliedBatch
from orders_api.adapters.rabbitmq.connections import blocking_connection
from orders_api.adapters.rabbitmq.execution_messages import MalformedMessageError, decode_reports
from orders_api.adapters.rabbitmq.execution_queues import execution_queue_declarations
from orders_api.adapters.rabbitmq.management import (
    ManagementError,
    RabbitManagement,
    management_nodes,
    vhost_of,
)
from orders_api.execution_feed.liveness_file import liveness_file_is_fresh
from orders_api.execution_feed.metrics import ApplierMetrics
from orders_api.execution_feed.metrics import serve as serve_metrics
from orders_api.execution_feed.partition_assignment import (
    consumer_tag,
    partition_consumers,
    partitions_to_give_up,
)
from orders_api.executions import ExecutionReport, MalformedReportError, report_from_fields
from orders_api.logging_setup import configure_logging
from orders_api.settings.applier import ApplierSettings
from orders_api.settings.base import load

logger = logging.getLogger(__name__)

#: Reports applied in one transaction: a batch is closed once its deliveries hold this many
#: (a single delivery holding more is applied whole).
BATCH_MAX = 500
#: Seconds a batch waits for more reports after its first before it is applied.
BATCH_WINDOW_S = 0.02
#: Unacked messages each partition's consumer may hold: the ingestor publishes about one per
#: partition every ``INGEST_BATCH_WAIT_MS``, so this lets several arrive while a batch commits,
#: yet bounds memory (a message holds up to ``INGEST_BATCH`` reports).
PREFETCH_PER_QUEUE = 32
#: Longest pause between two tries of a batch the database refused.
MAX_RETRY_DELAY_S = 5.0
#: Seconds of the RabbitMQ heartbeat; a batch never blocks the connection that long.
HEARTBEAT_S = 30
#: Seconds before a heartbeat file counts as stale for ``--check``.
DEFAULT_MAX_HEARTBEAT_AGE_S = 60.0
#: Seconds between two readings of who consumes the partitions: about the management API's
#: statistics interval (5 s by default), which a reading cannot be fresher than.
REBALANCE_INTERVAL_S = 5.0
#: Seconds a reading of the consumers may take; the consuming loop waits for it.
MANAGEMENT_TIMEOUT_S = 2.0


@dataclass
class _Delivery:
    tag: int
    #: The message's well-formed reports (none if it held none).
    reports: list[ExecutionReport]


class Applier:
    """Consumes the partition queues and applies their reports in batches until :meth:`stop`."""

    def __init__(
        self,
        settings: ApplierSettings,
        engine: sa.Engine,
        metrics: ApplierMetrics | None = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._metrics = metrics or ApplierMetrics()
        self._stopping = False
        self._pending: list[_Delivery] = []
        #: Reports the pending deliveries hold.
        self._pending_reports = 0
        self._first_at = 0.0
        #: This process's name in its consumer tags: unique even when a restarted container
        #: reuses the host name and the process id of the one before.
        self.applier_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._queues = [
            declaration.name
            for declaration in execution_queue_declarations(
                settings.execution_queue_prefix, settings.execution_partitions
            )
        ]
        self._management = RabbitManagement(
            management_nodes(settings.rabbitmq_url, settings.rabbitmq_management_url),
            vhost_of(settings.rabbitmq_url),
            timeout_s=MANAGEMENT_TIMEOUT_S,
        )
        self._rebalanced_at = 0.0
        #: Reports newly applied since the process started, for the log and the tests.
        self.applied = 0

    def stop(self) -> None:
        """Ask the loop to apply and ack the batch in hand, then return; safe from a signal handler."""
        self._stopping = True

    def run(self) -> None:
        """Consume until stopped; a lost broker connection is reopened after a pause."""
        while not self._stopping:
            try:
                self._consume()
            except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
                self._pending.clear()  # the broker requeues whatever was not acked
                self._pending_reports = 0
                logger.warning("lost RabbitMQ, reconnecting", extra={"error": str(error)})
                time.sleep(1.0)
        self._management.close()

    def _consume(self) -> None:
        connection = blocking_connection(
            self._settings.rabbitmq_url,
            role="orders-applier",
            connect_timeout_s=self._settings.connect_timeout_s,
            blocked_connection_timeout_s=60.0,
            heartbeat_s=HEARTBEAT_S,
        )
        try:
            channel = connection.channel()
            channel.basic_qos(prefetch_count=PREFETCH_PER_QUEUE)
            for declaration in execution_queue_declarations(
                self._settings.execution_queue_prefix, self._settings.execution_partitions
            ):
                channel.queue_declare(declaration.name, durable=True, arguments=declaration.arguments)
            for partition in range(len(self._queues)):
                self._register(channel, partition)
            logger.info(
                "applier consuming",
                extra={"partitions": len(self._queues), "applier_id": self.applier_id},
            )
            self._rebalanced_at = time.monotonic()
            while not self._stopping:
                self._touch_heartbeat()
                if time.monotonic() - self._rebalanced_at >= REBALANCE_INTERVAL_S:
                    self._rebalance(connection, channel)
                wait = BATCH_WINDOW_S - (time.monotonic() - self._first_at) if self._pending else 0.5
                connection.process_data_events(time_limit=max(0.0, wait))
                if self._pending and (
                    self._pending_reports >= BATCH_MAX or time.monotonic() - self._first_at >= BATCH_WINDOW_S
                ):
                    self._apply_and_ack(connection, channel)
            while self._pending:
                self._apply_and_ack(connection, channel)
        finally:
            if connection.is_open:
                connection.close()

    def _register(self, channel: BlockingChannel, partition: int) -> None:
        """Consume ``partition``'s queue: active at once if nobody else is, waiting behind them if not."""
        channel.basic_consume(
            self._queues[partition], self._on_message, consumer_tag=consumer_tag(self.applier_id, partition)
        )

    def _rebalance(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        """Give up the partitions that belong to another applier, after the batch in hand is acked.

        Without a reading (the management API unreachable) nothing moves: every partition still
        has one active applier, only the split waits.
        """
        self._rebalanced_at = time.monotonic()
        try:
            consumers = partition_consumers(self._management.consumers(), self._queues)
        except (ManagementError, ValueError) as error:
            logger.warning("cannot read who consumes the partitions", extra={"error": str(error)})
            return
        give_up = partitions_to_give_up(self.applier_id, consumers, len(self._queues))
        active = {c.partition for c in consumers if c.applier == self.applier_id and c.active}
        self._metrics.partitions_active.set(len(active - set(give_up)))
        if not give_up:
            return
        while self._pending:
            self._apply_and_ack(connection, channel)
        for partition in give_up:
            # Deliveries of this consumer not yet handed to _on_message are nacked back by pika.
            channel.basic_cancel(consumer_tag(self.applier_id, partition))
            self._register(channel, partition)
        logger.info("partitions handed over", extra={"partitions": give_up, "applier_id": self.applier_id})

    def _on_message(
        self,
        _channel: BlockingChannel,
        method: pika.spec.Basic.Deliver,
        _properties: pika.spec.BasicProperties,
        body: bytes,
    ) -> None:
        if not self._pending:
            self._first_at = time.monotonic()
        reports, malformed = _parse_message(body)
        if malformed:
            self._metrics.reports.labels("malformed").inc(malformed)
        self._pending.append(_Delivery(method.delivery_tag, reports))
        self._pending_reports += len(reports)

    def _apply_and_ack(self, connection: pika.BlockingConnection, channel: BlockingChannel) -> None:
        """Apply the oldest pending deliveries, up to :data:`BATCH_MAX` reports, in one transaction; ack them.

        The transaction is retried until it commits. One ``multiple`` ack up to the batch's last
        tag acks exactly the batch: the channel delivers tags in increasing order and every
        earlier tag was in an earlier batch, acked already.
        """
        taken, held = 1, len(self._pending[0].reports)
        while taken < len(self._pending) and held + len(self._pending[taken].reports) <= BATCH_MAX:
            held += len(self._pending[taken].reports)
            taken += 1
        batch, self._pending = self._pending[:taken], self._pending[taken:]
        self._pending_reports -= held
        # What stays was delivered while this batch waited: it is due with the next batch.
        reports = [report for delivery in batch for report in delivery.reports]
        delay = 0.1
        while True:
            try:
                batch_outcome = apply_batch(self._engine, reports)
                break
            except sa.exc.SQLAlchemyError as error:
                self._metrics.batch_failures.inc()
                logger.warning(
                    "applying a batch failed, retrying", extra={"error": str(error), "reports": len(reports)}
                )
                # Still alive: a restart cannot cure the database, so the probe keeps passing.
                self._touch_heartbeat()
                connection.sleep(delay)  # answers the broker's heartbeats meanwhile
                delay = min(MAX_RETRY_DELAY_S, delay * 2)
        outcome, refused = batch_outcome.applied, batch_outcome.refused
        for report in outcome.unknown_order:
            logger.warning(
                "execution report for an unknown order, dropped",
                extra={"exec_id": report.exec_id, "order_id": str(report.order_id)},
            )
        channel.basic_ack(batch[-1].tag, multiple=True)
        self._metrics.reports.labels("refused").inc(len(refused))
        self._observe(outcome, len(reports))
        self.applied += outcome.applied
        logger.debug("batch applied", extra={"applied": outcome.applied, "repeated": outcome.repeated})

    def _observe(self, outcome: AppliedBatch, reports: int) -> None:
        committed_at = datetime.now(UTC)
        for report in outcome.new:
            self._metrics.lag.observe(max(0.0, (committed_at - report.reported_at).total_seconds()))
        self._metrics.reports.labels("applied").inc(outcome.applied)
        self._metrics.reports.labels("repeated").inc(outcome.repeated)
        self._metrics.reports.labels("unknown_order").inc(len(outcome.unknown_order))
        self._metrics.batch_size.observe(reports)

    def _touch_heartbeat(self) -> None:
        try:
            self._settings.applier_heartbeat_file.touch()
        except OSError as error:
            logger.warning("cannot touch the heartbeat file", extra={"error": str(error)})


def _parse_message(body: bytes) -> tuple[list[ExecutionReport], int]:
    """A message's well-formed reports, and how many malformed ones (or bodies) it held.

    What is malformed is logged whole, to be acked with the rest.
    """
    try:
        items = decode_reports(body)
    except MalformedMessageError as error:
        logger.error(
            "malformed execution message, dropped",
            extra={"error": str(error), "body": body.decode("utf-8", "replace")},
        )
        return [], 1
    reports = []
    for item in items:
        try:
            reports.append(report_from_fields(item))
        except MalformedReportError as error:
            logger.error("malformed execution report, dropped", extra={"error": str(error), "report": item})
    return reports, len(items) - len(reports)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the applier until SIGTERM; with ``--check``, exit 0 only if its heartbeat is fresh."""
    parser = argparse.ArgumentParser(prog="orders-applier", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="liveness probe: is the heartbeat fresh?")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_HEARTBEAT_AGE_S)
    arguments = parser.parse_args(argv)
    settings = load(ApplierSettings)
    if arguments.check:
        sys.exit(0 if liveness_file_is_fresh(settings.applier_heartbeat_file, arguments.max_age) else 1)
    configure_logging(settings)
    engine = create_engine(settings, pool_size=1, application_name="orders-applier")
    metrics = ApplierMetrics()
    serve_metrics(metrics.registry, settings.execution_metrics_host, settings.applier_metrics_port)
    applier = Applier(settings, engine, metrics)
    handler = functools.partial(_stop_on_signal, applier)
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    try:
        applier.run()
    finally:
        engine.dispose()
    logger.info("applier stopped", extra={"applied": applier.applied})


def _stop_on_signal(applier: Applier, signum: int, _frame: FrameType | None) -> None:
    logger.info("applier stopping", extra={"signal": signal.Signals(signum).name})
    applier.stop()
