"""``make bench``: the service against the limits of this machine, measured in one run, in one table.

In order, on a database and a RabbitMQ vhost of the run's own (dropped at the end):

1. ``POST /orders`` at 16 and 64 connections, with the API and the workers started as ``make run``
   starts them (``WEB_WORKERS``, ``WEB_THREADS``, ``WORKER_PROCESSES``, ``WORKER_THREADS`` and
   the settings' defaults, from the environment ``make`` passes); then at 64 with the workers
   paused, to show what the placements beside the API cost it.
2. With the service stopped: a bare Flask JSON endpoint under gunicorn (2 gthread workers of 16
   threads), the ceiling of any Flask design here; single-row INSERT commits (pgbench) and confirmed
   persistent publishes (:mod:`bench.publish_rate`) at the same concurrency, the ceilings of
   the chain.
3. ``POST /orders`` at 64 connections with the exchange up, then, on the same processes, while
   every call to it fails (the workers' entry point :mod:`orders_testkit.outage_workers` refuses
   every call while a marker file exists): the ratio of the two is the endpoint's isolation
   from the exchange, free of the run-to-run noise between two separately started services.
4. Placement throughput at 64, 256 and 512 orders in flight (:mod:`bench.placement`).
5. Execution reports end to end, feed -> ingestor -> applier, at 5,000 reports/s offered and as
   fast as possible, against one process's confirmed publishes (:mod:`bench.execution_feed`,
   in a database and vhost of its own, since it empties the orders between its runs).
6. What an order costs, each figure against its target (:mod:`bench.cost`), from the steps above.

Load comes from wrk (C, a process of its own, ``bench/orders.lua``: a unique body per request);
its CPU share is in the table. Every run is bounded in time; every process is stopped, even on
failure. Writes the plots to ``docs/`` and the raw figures, logs and wrk output to a temporary
directory it names.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from bench import ceilings, cost, execution_feed, placement
from bench.cpu import CpuMeter
from bench.load import LoadResult, run_wrk
from bench.report import Row, plot, ratio, table
from bench.sandbox import Sandbox, sandbox, scalar
from orders_api.settings.api import ApiSettings
from orders_api.settings.base import load
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from orders_testkit.fault_exchange import OUTAGE_MARKER_ENV
from orders_testkit.processes import BIN, PROJECT_ROOT, ProcessOptions, RunningService, running_service

#: Connections (and, for the ceilings, concurrency) of the two load levels.
CONNECTIONS = (16, 64)
#: Orders in flight of the placement steps.
IN_FLIGHT = (64, 256, 512)
#: Seconds of warm-up load before measuring a freshly started service (pools, publisher).
WARM_UP_S = 2.0
#: Seconds the bare endpoint's gunicorn has to answer after it starts.
BARE_START_TIMEOUT_S = 20.0
#: The bare endpoint's gunicorn: the reference the targets are set against, 2 gthread workers of 16 threads.
BARE_WORKERS, BARE_THREADS = 2, 16
#: The workers' entry point whose exchange refuses every call while the marker file exists.
OUTAGE_WORKER_MODULE = "orders_testkit.outage_workers"
#: Who runs what, for the CPU split.
_USERS = {"postgres": "postgres", "rabbitmq": "rabbitmq"}


def make_run_options(api: ApiSettings, workers: WorkerSettings) -> ProcessOptions:
    """The processes ``make run`` starts, as the API's and the workers' settings size them."""
    return ProcessOptions(
        web_workers=api.web_workers,
        web_threads=api.web_threads,
        worker_processes=workers.worker_processes,
        worker_threads=workers.worker_threads,
    )


def main(argv: list[str] | None = None) -> None:
    """Command line: ``python -m bench [--duration 8] [--plots docs]``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of each load run (default 8)")
    parser.add_argument("--plots", type=Path, default=PROJECT_ROOT / "docs", help="where the PNGs go")
    arguments = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="orders-bench-"))
    options = make_run_options(load(ApiSettings), load(WorkerSettings))
    print(f"bench: machine {machine()}", flush=True)
    print(f"bench: make run's processes {options}; logs and raw figures in {workdir}", flush=True)
    started = time.monotonic()
    with sandbox() as box:
        rows, figures, series, partial_cost = _measure(box, options, arguments.duration, workdir)
    print("bench: execution feed end to end", flush=True)
    with sandbox() as feed_box:
        baseline, feed_runs = execution_feed.measure_all(
            feed_box,
            execution_feed.DEFAULT_ORDERS,
            execution_feed.DEFAULT_FILLS,
            execution_feed.DEFAULT_RATES,
            workdir / "execution-feed",
        )
    rows += execution_feed.rows(feed_runs, baseline)
    figures["execution_feed"] = {"baseline": asdict(baseline), "runs": [asdict(run) for run in feed_runs]}
    at_target = next(run for run in feed_runs if run.offered == execution_feed.TARGET_RATE)
    order_cost = cost.OrderCost(
        **partial_cost,
        report_ms=at_target.cpu_ms_per_report,
        reports_per_order=at_target.reports / execution_feed.DEFAULT_ORDERS,
    )
    figures["cost"] = {**asdict(order_cost), "cpu_s_per_1000_orders": order_cost.cpu_s_per_1000_orders}
    (workdir / "results.json").write_text(json.dumps(figures, indent=2, default=str))
    written = plot(series, arguments.plots)
    print(table(rows))
    print(execution_feed.verdict(feed_runs))
    print(cost.table(cost.targets(order_cost)))
    print(f"bench: {time.monotonic() - started:.0f} s; plots {', '.join(str(path) for path in written)}")


def machine() -> str:
    """Cores, memory and the versions that matter, for the report."""
    memory_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return (
        f"{os.cpu_count()} cores, {memory_kb / 2**20:.1f} GiB, Python {platform.python_version()}, "
        f"{_version(['psql', '--version'])}, RabbitMQ {_rabbitmq_version()}, {_version(['wrk', '--version'])}"
    )


def _measure(
    box: Sandbox, options: ProcessOptions, duration_s: float, workdir: Path
) -> tuple[list[Row], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Steps 1 to 4, and the fields of :class:`bench.cost.OrderCost` they measure (all but the feed's)."""
    figures: dict[str, Any] = {}
    settings = Settings(database_url=box.database_url, rabbitmq_url=box.rabbitmq_url)

    print("bench: POST /orders with make run's processes", flush=True)
    for part in ("service", "outage"):
        (workdir / part).mkdir()
    with running_service(settings, workdir / "service", options) as service:
        normal = {c: _post(box, service, c, duration_s, workdir / f"post-{c}") for c in CONNECTIONS}
        print("bench: POST /orders at 64 again, as placements pile up behind the first run", flush=True)
        again = _post(box, service, 64, duration_s, workdir / "post-64-again")
        print("bench: POST /orders with the workers paused (where the cores go)", flush=True)
        with _workers_paused(service):
            paused = _post(box, service, 64, duration_s, workdir / "post-64-workers-paused")

    print("bench: bare Flask endpoint, service stopped", flush=True)
    with _bare_endpoint(workdir / "bare") as url:
        run_wrk(url, 64, WARM_UP_S, workdir / "bare-warm")
        bare = {c: run_wrk(url, c, duration_s, workdir / f"bare-{c}") for c in CONNECTIONS}

    print("bench: ceilings (pgbench INSERT commits, confirmed publishes)", flush=True)
    inserts = {
        c: ceilings.insert_commits(box.database_url, c, duration_s / 2, workdir / f"insert-{c}")
        for c in CONNECTIONS
    }
    publishes = {
        c: ceilings.confirmed_publishes(
            box.rabbitmq_url, f"bench-publish-{c}", c, duration_s / 2, workdir / "publish"
        )
        for c in CONNECTIONS
    }

    print("bench: POST /orders with the exchange up, then during an outage, same processes", flush=True)
    outage_settings = Settings(
        database_url=box.database_url, rabbitmq_url=box.rabbitmq_url, placement_queue="order-placement-outage"
    )
    marker = workdir / "exchange-down"
    outage_options = ProcessOptions(
        **{
            **asdict(options),
            "worker_module": OUTAGE_WORKER_MODULE,
            "extra_env": {**options.extra_env, OUTAGE_MARKER_ENV: str(marker)},
        }
    )
    with running_service(outage_settings, workdir / "outage", outage_options) as service:
        exchange_up = _post(box, service, 64, duration_s, workdir / "exchange-up-64")
        marker.touch()
        try:
            outage = _post(box, service, 64, duration_s, workdir / "outage-64")
        finally:
            marker.unlink()

    placements = []
    for step, in_flight in enumerate(IN_FLIGHT):
        print(f"bench: placement, {in_flight} in flight", flush=True)
        placements.append(
            placement.measure(box, options, in_flight, workdir / f"placement-{in_flight}", step)
        )

    rows = []
    for c in CONNECTIONS:
        rows.append(
            _load_row(
                f"bare Flask endpoint (gthread {BARE_WORKERS}x{BARE_THREADS})",
                bare[c],
                note="service stopped",
            )
        )
    for c in CONNECTIONS:
        rows.append(_post_row("POST /orders", normal[c], ratio(normal[c][0].rate, bare[c].rate, "of bare")))
    rows.append(_post_row("POST /orders, again", again, ratio(again[0].rate, normal[64][0].rate, "of first")))
    rows.append(
        _post_row("POST /orders, workers paused", paused, ratio(paused[0].rate, bare[64].rate, "of bare"))
    )
    for c in CONNECTIONS:
        rows.append(_ceiling_row("PostgreSQL INSERT commits (pgbench)", inserts[c], normal[c][0].rate))
    for c in CONNECTIONS:
        rows.append(_ceiling_row("RabbitMQ confirmed publishes", publishes[c], normal[c][0].rate))
    rows.append(_post_row("POST /orders, exchange up", exchange_up))
    rows.append(
        _post_row(
            "POST /orders, exchange outage", outage, ratio(outage[0].rate, exchange_up[0].rate, "of up")
        )
    )
    for result in placements:
        rows.append(
            Row(
                f"placement, {result.in_flight} in flight",
                None,
                result.rate,
                result.p50_ms,
                result.p95_ms,
                result.p99_ms,
                result.max_ms,
                errors=result.unplaced,
                ratio=ratio(result.rate, result.ideal, f"of {result.ideal:.0f}/s"),
                note=(
                    f"201->placed; workers {result.worker_rss_mb:.0f} MB,"
                    f" {result.worker_connections} PG conns"
                ),
            )
        )
    for result in placements:
        rows.append(
            Row(
                f"duplicate window, {result.in_flight} in flight",
                None,
                math.nan,
                result.window_p50_ms,
                None,
                result.window_p99_ms,
                result.window_max_ms,
                note="exchange answered -> placed committed (worker logs)",
            )
        )
    figures.update(
        machine=machine(),
        options=asdict(options),
        post={c: _load_figures(*normal[c]) for c in CONNECTIONS},
        post_again=_load_figures(*again),
        bare={c: _load_figures(bare[c]) for c in CONNECTIONS},
        inserts={c: asdict(inserts[c]) for c in CONNECTIONS},
        publishes={c: asdict(publishes[c]) for c in CONNECTIONS},
        exchange_up=_load_figures(*exchange_up),
        outage=_load_figures(*outage),
        workers_paused=_load_figures(*paused),
        placements=[asdict(result) for result in placements],
    )
    series = {
        "POST /orders, 64 conns": normal[64][0].records,
        "POST /orders, 64 conns, exchange outage": outage[0].records,
    }
    return rows, figures, series, _cost_so_far(normal[64], again, paused, bare[64], placements)


def _cost_so_far(
    first: tuple[LoadResult, int, dict[str, float]],
    again: tuple[LoadResult, int, dict[str, float]],
    paused: tuple[LoadResult, int, dict[str, float]],
    bare: LoadResult,
    placements: list[placement.PlacementResult],
) -> dict[str, Any]:
    """The fields of :class:`bench.cost.OrderCost` that steps 1 to 4 measure."""
    post, _, _ = first
    paused_post, _, paused_cpu = paused
    accepted = paused_post.rate * paused_post.duration_s
    drain = next(result for result in placements if result.in_flight == 256)
    widest = next(result for result in placements if result.in_flight == 512)
    return {
        "post_of_bare": post.rate / bare.rate,
        "post_p99_ms": post.p99_ms,
        "post_errors": post.errors,
        "second_of_first": again[0].rate / post.rate,
        "api_ms": paused_cpu["api"] / accepted * 1000,
        "api_chain_ms": (paused_cpu["api"] + paused_cpu["postgres"] + paused_cpu["rabbitmq"])
        / accepted
        * 1000,
        "worker_ms_per_call": drain.worker_cpu_s / drain.calls * 1000,
        "worker_chain_ms_per_call": (drain.worker_cpu_s + drain.postgres_cpu_s + drain.rabbitmq_cpu_s)
        / drain.calls
        * 1000,
        "calls_per_order": drain.calls / drain.backlog_orders,
        "placements_512_of_ideal": widest.rate / widest.ideal,
    }


def _post(
    box: Sandbox, service: RunningService, connections: int, duration_s: float, workdir: Path
) -> tuple[LoadResult, int, dict[str, float]]:
    """One load run against ``POST /orders``: wrk's figures, the distinct bodies stored, the CPU split."""
    url = f"{service.base_url}/orders"
    run_wrk(url, 64, WARM_UP_S, workdir / "warm")
    meter = CpuMeter({"api": service.api_pid, "workers": service.workers_pid}, _USERS)
    with closing(box.connect()) as database, database.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        since = scalar(cursor)
        meter.start()
        result = run_wrk(url, connections, duration_s, workdir)
        cpu = meter.stop()
        cursor.execute(
            "SELECT count(DISTINCT (quantity, instrument, type)) FROM orders WHERE created_at >= %s", (since,)
        )
        unique: int = scalar(cursor)
    cpu["wrk"] = result.cpu_s
    return result, unique, cpu


def _post_row(name: str, measured: tuple[LoadResult, int, dict[str, float]], versus: str = "") -> Row:
    """A POST run's row from what :func:`_post` measured: wrk's figures, the bodies stored, the CPU split."""
    post, unique, cpu = measured
    return _load_row(name, post, unique, versus, _cpu_note(cpu, post))


def _load_row(
    name: str, result: LoadResult, unique: int | None = None, versus: str = "", note: str = ""
) -> Row:
    return Row(
        name,
        result.connections,
        result.rate,
        result.p50_ms,
        result.p95_ms,
        result.p99_ms,
        result.max_ms,
        result.errors,
        unique,
        result.cpu_cores,
        versus,
        note,
    )


def _ceiling_row(name: str, ceiling: ceilings.Ceiling, post_rate: float) -> Row:
    return Row(
        name,
        ceiling.connections,
        ceiling.rate,
        ceiling.p50_ms,
        ceiling.p95_ms,
        ceiling.p99_ms,
        ceiling.max_ms,
        ratio=ratio(post_rate, ceiling.rate, "POST/this"),
        note="service stopped",
    )


def _cpu_note(cpu: Mapping[str, float], result: LoadResult) -> str:
    """Cores used per part, e.g. ``cores: api 1.1, workers 0.2, pg 0.3, mq 0.2``."""
    seconds = result.duration_s or 1.0
    parts = (("api", "api"), ("workers", "workers"), ("postgres", "pg"), ("rabbitmq", "mq"))
    return "cores: " + ", ".join(f"{label} {cpu.get(key, 0.0) / seconds:.2f}" for key, label in parts)


def _load_figures(
    result: LoadResult, unique: int | None = None, cpu: Mapping[str, float] | None = None
) -> dict[str, Any]:
    figures = {key: value for key, value in asdict(result).items() if key != "records"}
    figures.update(rate=result.rate, unique=unique, cpu_s=dict(cpu or {}))
    return figures


@contextmanager
def _workers_paused(service: RunningService) -> Iterator[None]:
    """The worker processes stopped (SIGSTOP) and resumed after: the API's chain without placements.

    Not a way to run the service, a measurement: how much of the two cores the placements of the
    orders being posted take from the API beside them. Messages wait in the queue meanwhile.
    """
    os.killpg(service.workers_pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(service.workers_pid, signal.SIGCONT)


@contextmanager
def _bare_endpoint(workdir: Path) -> Iterator[str]:
    """Serve :mod:`bench.bare_app` on a free port; stopped (and its group killed) after."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    command = [
        str(BIN / "gunicorn"),
        "--bind",
        f"127.0.0.1:{port}",
        "--worker-class",
        "gthread",
        "--workers",
        str(BARE_WORKERS),
        "--threads",
        str(BARE_THREADS),
        "--no-control-socket",
        "bench.bare_app:app",
    ]
    with (workdir / "gunicorn.log").open("wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}/orders"
        _wait_until_answering(url, process)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def _wait_until_answering(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + BARE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the bare endpoint's gunicorn exited with status {process.returncode}")
        with suppress(requests.RequestException):
            if requests.post(url, json={"quantity": 1}, timeout=1).status_code == 201:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the bare endpoint did not answer within {BARE_START_TIMEOUT_S:.0f} s")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _version(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return f"{command[0]} ?"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0]
        if (done.stdout or done.stderr)
        else f"{command[0]} ?"
    )


def _rabbitmq_version() -> str:
    try:
        overview = requests.get(
            "http://127.0.0.1:15672/api/overview", auth=("guest", "guest"), timeout=5
        ).json()
    except (requests.RequestException, ValueError):
        return "?"
    return str(overview.get("rabbitmq_version", "?"))


if __name__ == "__main__":
    main()
