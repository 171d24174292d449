r"""Placement throughput: how fast the workers drain a backlog, and how long an order waits to be placed.

For each number of orders in flight (the workers' processes times threads, each call to the stand-in
exchange taking 0.5 s and failing one time in ten), with the API running:

1. **Drain.** The workers are stopped; ``20 * in_flight`` orders are posted (real ``201`` answers);
   the workers start and place them. Placements per second are counted between the 10th and
   70th percentile of ``placed_at`` (the start and the retry tail left out) and compared with
   the ideal ``in_flight / 0.5 s``. Meanwhile the workers' resident memory and the PostgreSQL
   connections they hold (``application_name`` ``orders-worker``) are sampled; their maxima
   are reported, with the CPU the workers, PostgreSQL and RabbitMQ used per exchange call.
2. **201 → placed.** With the workers idle, orders arrive for a few seconds at about half the
   ideal rate; ``placed_at - created_at`` of each (``created_at`` is taken just before the
   commit that precedes the ``201``) gives the p50/p99 a client sees when the workers keep up.
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from psycopg2.extensions import connection

from bench.answer_window import windows_ms
from bench.cpu import CpuMeter, rss_mb
from bench.load import run_wrk
from bench.sandbox import Sandbox, scalar
from bench.stats import percentile, steady_rate
from orders_api.settings.shared import Settings
from orders_testkit.processes import STOP_TIMEOUT_S, ProcessOptions, RunningService, running_service
from workers.bootstrap import APPLICATION_NAME

#: Seconds one successful call to the stand-in exchange takes.
EXCHANGE_LATENCY_S = 0.5
#: Orders in the backlog, per order in flight: about ten seconds, twenty waves of 0.5 s calls,
#: of ideal draining. With six waves the measured rate depended on where the window's ends fell
#: within a wave by up to a tenth (bench/stats.py).
BACKLOG_PER_IN_FLIGHT = 20
#: Seconds of arrivals for the 201 → placed measurement.
ARRIVALS_S = 3.0
#: Connections posting those arrivals.
ARRIVAL_CONNECTIONS = 16
#: Seconds the orders of one step may take to be placed before the step gives up waiting.
SETTLE_TIMEOUT_S = 60.0
#: Seconds between samples while draining.
_SAMPLE_S = 0.2


@dataclass(frozen=True)
class PlacementResult:
    """One step: ``in_flight`` concurrent placements."""

    in_flight: int
    orders: int
    #: Placements per second while a backlog remained.
    rate: float
    #: 201 → placed of orders arriving at about half the ideal rate, in ms.
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    #: Orders of the step that ended ``failed`` or were not placed in time.
    unplaced: int
    worker_rss_mb: float
    worker_connections: int
    #: The duplicate window of the step's placements (exchange answered → ``placed`` committed),
    #: in ms: p50, p99, max (:mod:`bench.answer_window`).
    window_p50_ms: float
    window_p99_ms: float
    window_max_ms: float
    #: While draining the backlog: its orders, their calls to the exchange (attempts), and the
    #: CPU seconds of the workers, PostgreSQL and RabbitMQ.
    backlog_orders: int = 0
    calls: int = 0
    worker_cpu_s: float = math.nan
    postgres_cpu_s: float = math.nan
    rabbitmq_cpu_s: float = math.nan

    @property
    def ideal(self) -> float:
        """Placements per second if every thread spent exactly 0.5 s per order."""
        return self.in_flight / EXCHANGE_LATENCY_S


def measure(
    box: Sandbox, options: ProcessOptions, in_flight: int, workdir: Path, step: int
) -> PlacementResult:
    """Run both parts of one step on a placement queue of its own; stop every process after."""
    threads = math.ceil(in_flight / options.worker_processes)
    step_options = ProcessOptions(
        web_workers=options.web_workers,
        web_threads=options.web_threads,
        worker_processes=options.worker_processes,
        worker_threads=threads,
        extra_env=options.extra_env,
    )
    settings = Settings(
        database_url=box.database_url,
        rabbitmq_url=box.rabbitmq_url,
        placement_queue=f"order-placement-bench-{step}",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    with running_service(settings, workdir, step_options) as service, closing(box.connect()) as database:
        orders_url = f"{service.base_url}/orders"
        _stop_workers(service)
        backlog = BACKLOG_PER_IN_FLIGHT * in_flight
        started = _now(database)
        run_wrk(
            orders_url,
            64,
            SETTLE_TIMEOUT_S,
            workdir / "backlog",
            stop_when=lambda: _created(database, started) >= backlog,
        )
        service.restart_workers()
        meter = CpuMeter({"workers": service.workers_pid}, {"postgres": "postgres", "rabbitmq": "rabbitmq"})
        meter.start()
        rss, connections = _drain(database, started, service.workers_pid)
        cpu = meter.stop()
        backlog_orders, calls = _calls(database, started)
        placed_times = _placed_times(database, started)
        rate = steady_rate(placed_times)

        arrivals = _now(database)
        delay_ms = max(0.0, ARRIVAL_CONNECTIONS / (0.5 * in_flight / EXCHANGE_LATENCY_S) * 1000 - 5)
        run_wrk(orders_url, ARRIVAL_CONNECTIONS, ARRIVALS_S, workdir / "arrivals", delay_ms=delay_ms)
        _drain(database, arrivals, service.workers_pid)
        waits = _waits_ms(database, arrivals)
        unplaced = _unplaced(database, started)
    windows = windows_ms(log.read_text(encoding="utf-8", errors="replace") for log in service.worker_logs)
    return PlacementResult(
        in_flight=in_flight,
        orders=len(placed_times) + len(waits),
        rate=rate,
        p50_ms=percentile(waits, 50),
        p95_ms=percentile(waits, 95),
        p99_ms=percentile(waits, 99),
        max_ms=waits[-1] if waits else math.nan,
        unplaced=unplaced,
        worker_rss_mb=rss,
        worker_connections=connections,
        window_p50_ms=percentile(windows, 50),
        window_p99_ms=percentile(windows, 99),
        window_max_ms=windows[-1] if windows else math.nan,
        backlog_orders=backlog_orders,
        calls=calls,
        worker_cpu_s=cpu["workers"],
        postgres_cpu_s=cpu["postgres"],
        rabbitmq_cpu_s=cpu["rabbitmq"],
    )


def _drain(database: connection, since: float, workers_pid: int) -> tuple[float, int]:
    """Wait until every order created since ``since`` is settled; return the peak RSS and connections."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    peak_rss, peak_connections = 0.0, 0
    with database.cursor() as cursor:
        while time.monotonic() < deadline:
            peak_rss = max(peak_rss, rss_mb(workers_pid))
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = %s",
                (APPLICATION_NAME,),
            )
            peak_connections = max(peak_connections, scalar(cursor))
            cursor.execute(
                "SELECT count(*) FILTER (WHERE status = 'pending') FROM orders"
                " WHERE created_at >= to_timestamp(%s)",
                (since,),
            )
            if scalar(cursor) == 0:
                break
            time.sleep(_SAMPLE_S)
    return peak_rss, peak_connections


def _stop_workers(service: RunningService) -> None:
    """Stop the workers (SIGTERM to the Dramatiq CLI, as a deployment does) so that a backlog can build."""
    os.kill(service.workers_pid, signal.SIGTERM)
    if service.wait_for_exit("workers", STOP_TIMEOUT_S) is None:
        raise RuntimeError(f"the workers did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM")


def _now(database: connection) -> float:
    """The database's clock, in Unix seconds: orders' timestamps are compared with it."""
    with database.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM clock_timestamp())::float8")
        now: float = scalar(cursor)
        return now


def _created(database: connection, since: float) -> int:
    with database.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM orders WHERE created_at >= to_timestamp(%s)", (since,))
        count: int = scalar(cursor)
        return count


def _calls(database: connection, since: float) -> tuple[int, int]:
    """The orders created since ``since``, and their calls to the exchange: one per attempt."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), coalesce(sum(attempts), 0) FROM orders WHERE created_at >= to_timestamp(%s)",
            (since,),
        )
        row = cursor.fetchone()
    assert row is not None  # an aggregate always returns a row
    return int(row[0]), int(row[1])


def _placed_times(database: connection, since: float) -> list[float]:
    """Unix times at which the orders created since ``since`` were placed, in order."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM placed_at)::float8 FROM orders"
            " WHERE created_at >= to_timestamp(%s) AND placed_at IS NOT NULL ORDER BY placed_at",
            (since,),
        )
        return [row[0] for row in cursor.fetchall()]


def _waits_ms(database: connection, since: float) -> list[float]:
    """``placed_at - created_at`` of the orders created since ``since``, in ms, ascending."""
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT extract(epoch FROM placed_at - created_at)::float8 * 1000 FROM orders"
            " WHERE created_at >= to_timestamp(%s) AND placed_at IS NOT NULL ORDER BY 1",
            (since,),
        )
        return [row[0] for row in cursor.fetchall()]


def _unplaced(database: connection, since: float) -> int:
    with database.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM orders WHERE created_at >= to_timestamp(%s) AND status <> 'placed'",
            (since,),
        )
        count: int = scalar(cursor)
        return count
