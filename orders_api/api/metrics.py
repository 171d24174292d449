"""``GET /metrics``: the API's Prometheus metrics, added up over every gunicorn worker of the server.

- HTTP requests: prometheus-flask-exporter's request hooks (``flask_http_request_duration_seconds``
  by method, route and status, with ``_count`` the requests). The route is Flask's URL rule
  (``/orders/<uuid:order_id>``), never the raw path, so an id does not make a time series.
- The confirmed publisher's confirm latency and failures, the group commit's batch sizes and the
  orders whose COMMIT's outcome stayed unknown (:class:`ApiMetrics`), reported through the
  callbacks those classes take, so the service layer and the adapters import nothing of Prometheus.
- The on-call gauges (:mod:`orders_api.api.on_call_gauges`).

Under gunicorn the metrics are in prometheus_client's multiprocess mode: each worker writes its
own files in ``PROMETHEUS_MULTIPROC_DIR`` (emptied by gunicorn's ``on_starting`` hook), and a
scrape, whichever worker serves it, adds up all of them. Without that variable (the Flask CLI,
in-process tests) the metrics are this process's own.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from flask import Flask, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_flask_exporter import PrometheusMetrics

from orders_api.api import openapi
from orders_api.metrics_directory import existing_metrics_directory, multiprocess_mode

#: Seconds: a warm confirm takes about a millisecond, a batch a few; the timeout is 2 s.
CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
#: Orders per group commit, up to ``ORDERS_PER_COMMIT`` (64).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
#: Seconds a request takes: an order is ~10 ms under load; bounded waits end at a few seconds.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Where Prometheus scrapes the API; its own requests are not counted.
METRICS_PATH = "/metrics"
#: The route label of a request that matched no route (a 404 or 405 by path).
UNMATCHED_ROUTE = "unmatched"


class ApiMetrics:
    """The API's own metrics, fed by the publisher's and the group commit's callbacks."""

    def __init__(self, registry: CollectorRegistry) -> None:
        """Create the metrics in ``registry``, one per app, so that two apps in one process do not clash.

        A configured multiprocess directory is created first if missing, as a metric writes its
        file at once.
        """
        existing_metrics_directory()
        self._confirm_seconds = Histogram(
            "orders_publish_confirm_seconds",
            "Seconds from handing messages to the publisher to RabbitMQ's confirm of all of them.",
            buckets=CONFIRM_BUCKETS,
            registry=registry,
        )
        self._publish_failures = Counter(
            "orders_publish_failures",
            "Messages whose publish raised: not confirmed (nack, unroutable, timeout, no connection).",
            registry=registry,
        )
        self._outcome_unknown = Counter(
            "orders_commit_outcome_unknown",
            "Orders answered 500 because their COMMIT's reply was lost and its outcome could not be"
            " learnt in time: they may be committed (the ambiguous 500).",
            registry=registry,
        )
        self._batch_size = Histogram(
            "orders_group_commit_batch_size",
            "Orders stored and published together by one group commit.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )

    def confirmed(self, seconds: float) -> None:
        """One publish was confirmed after ``seconds`` (a ``PublishObserver``)."""
        self._confirm_seconds.observe(seconds)

    def failed(self, messages: int) -> None:
        """A publish of ``messages`` messages failed."""
        self._publish_failures.inc(messages)

    def commit_outcome_unknown(self, order_ids: Sequence[uuid.UUID]) -> None:
        """The COMMIT of ``order_ids`` was lost and its outcome not learnt (an ``OutcomeUnknownObserver``)."""
        self._outcome_unknown.inc(len(order_ids))

    def batch_processed(self, size: int) -> None:
        """The group commit took a batch of ``size`` orders."""
        self._batch_size.observe(size)


def route(request: Request) -> str:
    """The label of a request: the URL rule it matched, so that ids in paths do not make new series.

    Named ``route`` because prometheus-flask-exporter names the label after this function.
    """
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def init_app(app: Flask, registry: CollectorRegistry, on_call: Collector) -> None:
    """Instrument ``app``'s requests and serve ``GET /metrics`` from ``registry`` and ``on_call``.

    ``registry`` holds this app's metrics for a process without multiprocess mode; under gunicorn
    the scrape reads the workers' files instead, and ``on_call`` is added to each scrape.
    """
    exporter = PrometheusMetrics(
        app=None,
        path=None,
        registry=registry,
        group_by=route,
        buckets=REQUEST_BUCKETS,
        excluded_paths=[f"^{METRICS_PATH}$"],
    )
    exporter.init_app(app)
    registry.register(on_call)

    def scrape() -> Response:
        """Every metric of the server, in Prometheus' text format; a scrape is not counted as a request."""
        if multiprocess_mode():
            scraped = CollectorRegistry()
            MultiProcessCollector(scraped)  # type: ignore[no-untyped-call]  # untyped upstream
            scraped.register(on_call)
        else:
            scraped = registry
        return Response(generate_latest(scraped), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule(METRICS_PATH, "metrics", scrape, methods=["GET"])
    openapi.document_path(
        app,
        METRICS_PATH,
        {
            "get": {
                "operationId": "scrapeMetrics",
                "tags": ["operations"],
                "summary": "Prometheus metrics of every web worker of this server",
                "responses": {
                    "200": {
                        "description": "Prometheus' text exposition format.",
                        "content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
