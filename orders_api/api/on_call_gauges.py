"""On-call gauges on the API's ``GET /metrics``: the oldest pending order's age and the dead letters waiting.

Why here, and at scrape time: both describe the whole system, not one process, and the API is the
one role that always runs and already holds both a database pool and the broker's address; the
workers' metrics port is served by Dramatiq's own exposition process, which only reads metric
files. Asking at scrape time keeps the number as fresh as the scrape, with no loop to run.

Why cached and bounded: Prometheus may scrape every API process every few seconds, and a scrape
must answer even while PostgreSQL or RabbitMQ does not. Each reading is refreshed at most once per
``max_age_s``, in a thread of its own, one at a time; a scrape waits for a refresh only up to
``wait_s`` and otherwise reports the last value it has, with its age, and ``..._up 0``. A value
never read is reported as NaN (unknown), never as 0, which would look like good news.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from orders_api.adapters.postgres.backlog import oldest_pending_age_s
from orders_api.adapters.rabbitmq.dead_letters import dead_letter_count
from orders_api.settings.shared import Settings

logger = logging.getLogger(__name__)

#: Seconds a reading is reused before a scrape asks again.
MAX_AGE_S = 10.0
#: Seconds a scrape waits for a refresh before it reports the last value instead.
WAIT_S = 1.0


@dataclass(frozen=True)
class Reading:
    """What a scrape reports for one number."""

    #: The last value read, or ``None`` if none was ever read.
    value: float | None
    #: Seconds since that value was read, or ``None`` if none was ever read.
    age_s: float | None
    #: Whether the latest attempt to read it succeeded.
    up: bool


class CachedReading:
    """A number read by ``read`` at most once per ``max_age_s``, never keeping a caller past ``wait_s``.

    Thread-safe: concurrent scrapes share the one refresh in flight. A failed or slow refresh also
    counts as an attempt, so a sick dependency is asked once per ``max_age_s``, not once per scrape.
    """

    def __init__(
        self,
        name: str,
        read: Callable[[], float],
        *,
        max_age_s: float = MAX_AGE_S,
        wait_s: float = WAIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._read = read
        self._max_age_s = max_age_s
        self._wait_s = wait_s
        self._clock = clock
        self._lock = threading.Lock()
        self._value: float | None = None
        self._read_at: float | None = None
        self._attempted_at: float | None = None
        self._up = False
        self._refreshing: Future[None] | None = None

    def refresh_if_due(self) -> None:
        """Start a refresh if the last attempt is too old, without waiting for it.

        A scrape starts every reading's refresh first, so that their waits overlap.
        """
        self._start_refresh_if_due()

    def get(self, wait_s: float | None = None) -> Reading:
        """The current reading, refreshed first if the last attempt is too old.

        The caller waits for the refresh up to ``wait_s`` (by default the reading's own).
        """
        wait_s = self._wait_s if wait_s is None else wait_s
        refreshing = self._start_refresh_if_due()
        if refreshing is not None:
            try:
                refreshing.result(timeout=wait_s)
            except FutureTimeout:
                logger.warning("%s: no answer within %.2g s; reporting the last value", self._name, wait_s)
        with self._lock:
            age_s = None if self._read_at is None else max(0.0, self._clock() - self._read_at)
            return Reading(self._value, age_s, self._up)

    def _start_refresh_if_due(self) -> Future[None] | None:
        with self._lock:
            if self._refreshing is not None:
                return self._refreshing
            now = self._clock()
            if self._attempted_at is not None and now - self._attempted_at < self._max_age_s:
                return None
            self._attempted_at = now
            refreshing: Future[None] = Future()
            self._refreshing = refreshing
        threading.Thread(
            target=self._refresh, args=(refreshing,), name=f"reading {self._name}", daemon=True
        ).start()
        return refreshing

    def _refresh(self, refreshing: Future[None]) -> None:
        try:
            value = float(self._read())
        except Exception as error:
            logger.warning("%s: cannot read it: %s", self._name, error)
            with self._lock:
                self._up = False
        else:
            with self._lock:
                self._value, self._read_at, self._up = value, self._clock(), True
        finally:
            with self._lock:
                self._refreshing = None
            refreshing.set_result(None)


class OnCallGauges(Collector):
    """A prometheus_client collector for the on-call readings; values from this process's cache."""

    def __init__(self, readings: dict[str, tuple[CachedReading, str]], *, wait_s: float = WAIT_S) -> None:
        """``readings`` maps each gauge's name to its reading and its help text.

        A scrape waits ``wait_s`` in all for the readings' refreshes, which run side by side.
        """
        self._readings = readings
        self._wait_s = wait_s

    def describe(self) -> Iterator[Metric]:
        """The gauges' names, without reading anything: a registry calls this when the collector is added."""
        for name, (_, documentation) in self._readings.items():
            yield GaugeMetricFamily(name, documentation)
        yield from self._status_families()

    def collect(self) -> Iterator[Metric]:
        """Each gauge's value (NaN if never read), plus how old it is and whether its last read worked."""
        age = GaugeMetricFamily(*self._AGE, labels=["gauge"])
        up = GaugeMetricFamily(*self._UP, labels=["gauge"])
        deadline = time.monotonic() + self._wait_s
        for reading, _ in self._readings.values():
            reading.refresh_if_due()
        for name, (reading, documentation) in self._readings.items():
            current = reading.get(max(0.0, deadline - time.monotonic()))
            yield GaugeMetricFamily(name, documentation, value=_known(current.value))
            age.add_metric([name], _known(current.age_s))
            up.add_metric([name], 1.0 if current.up else 0.0)
        yield age
        yield up

    _AGE = (
        "orders_on_call_gauge_age_seconds",
        "Seconds since the on-call gauge's value was read (NaN: never).",
    )
    _UP = (
        "orders_on_call_gauge_up",
        "1 if the on-call gauge's latest read worked, 0 if it failed or is late.",
    )

    def _status_families(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(*self._AGE, labels=["gauge"])
        yield GaugeMetricFamily(*self._UP, labels=["gauge"])


def _known(value: float | None) -> float:
    return math.nan if value is None else value


def on_call_gauges(settings: Settings, engine: sa.Engine) -> OnCallGauges:
    """The API's on-call gauges: the database through ``engine`` (the app's pool), RabbitMQ afresh."""
    oldest = CachedReading("oldest pending order's age", lambda: oldest_pending_age_s(engine))
    dead_letters = CachedReading(
        "dead-letter queue depth",
        lambda: dead_letter_count(settings.rabbitmq_url, settings.placement_queue, timeout_s=WAIT_S),
    )
    return OnCallGauges(
        {
            "orders_oldest_pending_order_age_seconds": (
                oldest,
                "Seconds since the oldest pending order was created (0: none pending; NaN: unknown).",
            ),
            "orders_dead_letter_queue_messages": (
                dead_letters,
                "Messages in the placement queue's dead-letter queue (.XQ): orders given up (NaN: unknown).",
            ),
        }
    )
