"""The workers' own Prometheus metrics, served beside Dramatiq's on the workers' metrics port.

Dramatiq's :class:`~dramatiq.middleware.prometheus.Prometheus` middleware (which Dramatiq 2 no
longer adds by default) counts messages, errors, retries and rejects, and its exposition server
(port ``dramatiq_prom_port``, 9191 by default) serves every metric file found in its directory
(``dramatiq_prom_db``). These metrics are written to the same directory, so they come out in the
same scrape: ``orders-workers`` (:mod:`workers.serve`) points ``PROMETHEUS_MULTIPROC_DIR`` and
``dramatiq_prom_db`` at one fresh directory before prometheus_client is first imported.

They say what Dramatiq cannot know: what a placement achieved, why it is retried, which orders
were given up, whether the exchange's circuit breaker is holding placements back, and how long
orders take from creation to ``placed``.
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from orders_api.clock import utc_now
from orders_api.service_layer.placement import PlacementOutcome

#: Seconds from an order's creation to ``placed``: 0.5 s at best (the exchange's answer), minutes
#: to hours when the exchange is down and retries back off (up to about 1.5 h in all).
CREATED_TO_PLACED_BUCKETS = (0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 7200.0)


class WorkerMetrics:
    """The workers' metrics (a :class:`workers.placement_actor.PlacementObserver`).

    ``registry`` is for tests; the workers register nothing in-process, since their scrape reads
    the multiprocess files, not a registry.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Create the metrics, in ``registry`` if given."""
        self._placements = Counter(
            "orders_placements",
            "Placement messages handled to the end, by outcome: placed, placed again (a second placement"
            " on the exchange, after a pause or crash inside the call), already placed, orphan dropped.",
            ["outcome"],
            registry=registry,
        )
        self._retries = Counter(
            "orders_placement_retries",
            "Placement messages put back for a retry, by reason.",
            ["reason"],
            registry=registry,
        )
        self._dead_letters = Counter(
            "orders_dead_letters",
            "Placement messages given up (order failed, message dead-lettered), by the error that ended it.",
            ["error"],
            registry=registry,
        )
        self._taken_over = Counter(
            "orders_claims_taken_over",
            "Claims taken over from a holder that stopped renewing mid-placement (killed, or paused past"
            " its lease): each is an order the exchange may hold twice; a second placement found when"
            " recorded is counted as placed_again.",
            registry=registry,
        )
        self._breaker_open = Gauge(
            "orders_exchange_breaker_open",
            "Worker processes whose circuit breaker to the exchange is open (holding placements back).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._created_to_placed = Histogram(
            "orders_created_to_placed_seconds",
            "Seconds from an order's creation (the API's commit) to its placement on the exchange.",
            buckets=CREATED_TO_PLACED_BUCKETS,
            registry=registry,
        )

    def handled(self, outcome: PlacementOutcome, created_at: datetime | None) -> None:
        """A message was handled; an order ``PLACED`` now was created at ``created_at``."""
        self._placements.labels(outcome.name.lower()).inc()
        if outcome is PlacementOutcome.PLACED and created_at is not None:
            self._created_to_placed.observe(max(0.0, (utc_now() - created_at).total_seconds()))

    def retried(self, reason: str) -> None:
        """A message is to be retried, for ``reason``."""
        self._retries.labels(reason).inc()

    def took_over(self) -> None:
        """A claim abandoned mid-placement was taken over."""
        self._taken_over.inc()

    def gave_up(self, error: BaseException) -> None:
        """A message was given up for ``error``: its order is failed, the message dead-lettered."""
        self._dead_letters.labels(type(error).__name__).inc()

    def breaker_changed(self, is_open: bool) -> None:
        """The exchange's circuit breaker in this process opened (``True``) or closed."""
        self._breaker_open.set(1 if is_open else 0)
