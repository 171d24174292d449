"""Prometheus metrics of the execution feed's two processes, each served on a port of its own.

The partition queues' depth says how much is waiting, not how late the fills that clients read
are, nor whether the ingestor still hears the exchange. These say it: the ingestor's connection,
resume point and publishing, and the applier's reports by outcome and the lag from a report's
``ts`` (the exchange's clock) to its commit, which is how stale ``GET /orders/<id>`` can be.

Each process is one process (no multiprocess files, unlike the API and the workers): its metrics
live in a registry of its own, served by prometheus_client's HTTP server on a thread. A port that
cannot be bound is logged and the process goes on without metrics: its work, moving reports, is
worth more than its figures, and a scrape that fails says so to whoever watches.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from orders_api.service_layer.ingest import SkipReason

logger = logging.getLogger(__name__)

#: Where both processes serve their metrics unless ``EXECUTION_METRICS_HOST`` says otherwise:
#: loopback, as ``make run`` serves everything; the pods set ``0.0.0.0``.
DEFAULT_METRICS_HOST = "127.0.0.1"
#: Seconds from a report's ``ts`` to its commit: tens of milliseconds when the applier keeps up,
#: seconds to minutes behind an outage of PostgreSQL or a backlog.
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Reports per batch the applier commits (up to ``BATCH_MAX``, 500).
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500)


class IngestorMetrics:
    """What ``orders-ingestor`` counts; in a registry of its own, which :func:`serve` exposes."""

    def __init__(self) -> None:
        """Create the metrics in a new registry (:attr:`registry`)."""
        self.registry = CollectorRegistry()
        self.received = Counter(
            "orders_feed_reports_received",
            "Reports read from the exchange's feed, repeats included.",
            registry=self.registry,
        )
        self.published = Counter(
            "orders_feed_reports_published",
            "Reports confirmed by RabbitMQ in a partition queue (a republished run counts again).",
            registry=self.registry,
        )
        self.publish_failures = Counter(
            "orders_feed_publish_failures",
            "Runs of reports RabbitMQ did not confirm (nack, lost connection, deadline); each is retried.",
            registry=self.registry,
        )
        self.disconnects = Counter(
            "orders_feed_disconnects",
            "Connections to the feed that ended (dropped, refused, or left to fill a gap);"
            " each is followed by a reconnect.",
            registry=self.registry,
        )
        self.connected = Gauge(
            "orders_feed_connected",
            "1 while the ingestor is connected to the feed, else 0.",
            registry=self.registry,
        )
        self.resume_point = Gauge(
            "orders_feed_resume_point",
            "The last feed_seq confirmed by RabbitMQ with every one before it: where a restart resumes.",
            registry=self.registry,
        )
        self.held = Gauge(
            "orders_feed_reports_held",
            "Reports received and not yet handed to RabbitMQ (ready, or waiting behind a gap).",
            registry=self.registry,
        )
        self.skipped = Counter(
            "orders_feed_reports_skipped",
            "feed_seq positions the resume point passed without publishing a report, by reason:"
            " malformed (read, never parses), missing (never read though connections went past it).",
            ["reason"],
            registry=self.registry,
        )
        for reason in SkipReason:
            self.skipped.labels(reason.value)
        self.deferred = Counter(
            "orders_feed_reports_deferred",
            "Reports not held because the most the ingestor holds were held already (behind a gap);"
            " the feed sends them again after a reconnect.",
            registry=self.registry,
        )


class ApplierMetrics:
    """What ``orders-applier`` counts; in a registry of its own, which :func:`serve` exposes."""

    def __init__(self) -> None:
        """Create the metrics in a new registry (:attr:`registry`)."""
        self.registry = CollectorRegistry()
        self.reports = Counter(
            "orders_execution_reports",
            "Reports taken from the partition queues, by outcome: applied, repeated (already applied),"
            " unknown_order, malformed, refused (by the database, alone: dropped).",
            ["outcome"],
            registry=self.registry,
        )
        self.batch_failures = Counter(
            "orders_execution_batch_failures",
            "Transactions of a batch that failed and are retried (the database refused or was unreachable).",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "orders_execution_batch_reports",
            "Reports per committed batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.partitions_active = Gauge(
            "orders_execution_partitions_active",
            "Partitions this applier is the active consumer of, as last read from the management API"
            " (the others it waits on).",
            registry=self.registry,
        )
        self.lag = Histogram(
            "orders_execution_lag_seconds",
            "Seconds from a report's ts (set by the exchange) to the commit that applied it: how stale"
            " an order's fills can read.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )


def serve(registry: CollectorRegistry, host: str, port: int) -> None:
    """Serve ``registry`` at ``http://host:port/metrics`` on a daemon thread; port 0: not at all.

    A port that cannot be bound is logged as an error, and the caller goes on without metrics.
    """
    if port == 0:
        return
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as error:
        logger.error(
            "cannot serve metrics, going on without them",
            extra={"host": host, "port": port, "error": str(error)},
        )
        return
    logger.info("serving metrics", extra={"host": host, "port": port})
