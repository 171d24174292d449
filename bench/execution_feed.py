"""Execution reports from the feed to visible state, end to end, with the real processes.

In a scratch database and vhost (:mod:`bench.sandbox`), inserts ``--orders`` placed orders, then
starts ``orders-exchange-feed --clean --fills-per-order K --late-commit-window 0`` (a free port, a
fresh state directory), one ``orders-applier`` and one ``orders-ingestor``, and counts the
``executions`` rows until every report (``orders * (1 + K)``) is applied. For each offered rate
(``--rates``; 0 is "as fast as possible", the ceiling) it reports:

- the **end-to-end rate**: reports applied divided by the time from the first report in the
  feed's log to the last ``applied_at``;
- the **lag from report to visible state**: each row's ``applied_at`` minus its ``reported_at``
  (the report's ``ts``, set by the feed when it made the report; both UTC, one clock).
  ``applied_at`` is PostgreSQL's ``now()``, the start of the applier's transaction, so the lag
  leaves out that transaction's own length (a few milliseconds);

beside the baseline measured in the same run: one process publishing confirmed persistent
messages with the ingestor's batch unconfirmed (:mod:`bench.publish_rate`). Every process is
SIGTERMed (killed after a grace period) and every run is bounded in time. Alone::

    python -m bench.execution_feed --orders 20000 --fills 2 --rates 5000 0
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import pika

from bench import ceilings
from bench.cpu import CpuMeter
from bench.report import Row, ratio, table
from bench.sandbox import Sandbox, sandbox, scalar
from bench.stats import percentile
from exchange_simulator.feed.durable_log import the_only_log
from orders_api.adapters.postgres.database import create_engine
from orders_api.adapters.rabbitmq.execution_queues import execution_queue_declarations
from orders_api.settings.shared import Settings
from orders_testkit.execution_reports import store_orders
from orders_testkit.processes import BIN, PROJECT_ROOT

#: The feed's target: reports per second end to end, and the p99 lag in milliseconds.
TARGET_RATE = 5000.0
TARGET_P99_MS = 1000.0
#: What a run measures unless told otherwise: placed orders, fills per order, offered rates (0: max).
DEFAULT_ORDERS = 20_000
DEFAULT_FILLS = 2
#: The target, twice the target (the headroom left on this machine), and the ceiling, where the
#: feed runs ahead of the pipeline, so the lag there is the backlog, growing with the run's length.
DEFAULT_RATES = (TARGET_RATE, 2 * TARGET_RATE, 0.0)
#: Partition queues, as ``make run`` has them.
PARTITIONS = 8
#: Reports the baseline publisher keeps unconfirmed: the ingestor's batch (``INGEST_BATCH``).
BASELINE_WINDOW = 500
#: Seconds of the baseline's publishing.
BASELINE_S = 4.0
#: Seconds a run may take beyond what its offered rate needs, before it is called stuck.
SLACK_S = 60.0
#: Seconds a process has to exit after SIGTERM before it is killed.
STOP_GRACE_S = 10.0
#: Seconds between two counts of the ``executions`` rows.
POLL_S = 0.2
#: Orders committed per transaction when the run's orders are stored.
STORE_CHUNK = 1000
#: Who runs what, for the CPU split.
_USERS = {"postgres": "postgres", "rabbitmq": "rabbitmq"}


@dataclass(frozen=True)
class FeedRun:
    """One offered rate's figures."""

    offered: float
    reports: int
    applied: int
    rate: float
    feed_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    #: Cores' worth of CPU per group of processes over the run.
    cores: dict[str, float]
    #: CPU of the service's part (ingestor, applier, PostgreSQL, RabbitMQ; not the simulator,
    #: which stands in for the exchange) per report applied, in ms.
    cpu_ms_per_report: float = math.nan

    @property
    def target_met(self) -> bool:
        """The target, to the letter: every report applied, the rate and the p99 both met."""
        return self.applied == self.reports and self.rate >= TARGET_RATE and self.p99_ms < TARGET_P99_MS


def end_to_end_rate(first_report_at: float, applied_at: Sequence[float]) -> float:
    """Reports per second from the first report made (epoch seconds) to the last one applied."""
    if not applied_at:
        return math.nan
    elapsed = max(applied_at) - first_report_at
    return len(applied_at) / elapsed if elapsed > 0 else math.nan


def lags_ms(pairs: Sequence[tuple[float, float]]) -> list[float]:
    """``applied - reported`` of each ``(reported, applied)`` pair (epoch seconds), in ms, ascending."""
    return sorted((applied - reported) * 1000 for reported, applied in pairs)


def log_span(lines: Sequence[str]) -> tuple[float, float, int]:
    """The first and last report ``ts`` (epoch seconds) and the report count of the feed's log lines.

    The log also holds adoption lines (``{"order": ...}``); only lines with a ``feed_seq`` are
    reports.
    """
    stamps = [
        datetime.fromisoformat(record["ts"]).timestamp()
        for record in (json.loads(line) for line in lines if line.strip())
        if "feed_seq" in record
    ]
    if not stamps:
        raise ValueError("the feed's log holds no report")
    return min(stamps), max(stamps), len(stamps)


def hot_frames(collapsed: Sequence[str], within: str | None = None, top: int = 8) -> list[tuple[float, str]]:
    """Where a process's samples (py-spy's collapsed stacks) are, as shares of all its samples.

    Each sample goes to its innermost frame (its own time) or, with ``within``, to its innermost
    frame whose text holds ``within`` (say ``orders_api/``: which line of ours it was in, the
    libraries it called included), or its innermost frame if none does.
    """
    where: Counter[str] = Counter()
    for line in collapsed:
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        ours = [frame for frame in frames if within is not None and within in frame]
        where[(ours or frames)[-1]] += int(count)
    total = sum(where.values())
    return [(samples / total, frame) for frame, samples in where.most_common(top)]


def verdict(runs: Sequence[FeedRun]) -> str:
    """One line: is the target met at some offered rate, and by which run."""
    met = [run for run in runs if run.target_met]
    target = f">= {TARGET_RATE:.0f} reports/s end to end with p99 lag < {TARGET_P99_MS:.0f} ms"
    if not met:
        return f"execution feed target ({target}): MISSED in every run"
    return (
        f"execution feed target ({target}): MET at offered {', '.join(_offered(run.offered) for run in met)}"
    )


def measure(
    box: Sandbox, orders: int, fills: int, offered: float, workdir: Path, step: int, *, profile: bool = False
) -> FeedRun:
    """One end-to-end run at ``offered`` reports/s (0: as fast as possible), on fresh orders and queues.

    :param profile: also sample the feed, the ingestor and the applier with ``py-spy record``
        (the ``bench`` extra) for the whole run, into ``<name>.pyspy.txt`` (collapsed stacks).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = f"bench-executions-{step}"
    settings = Settings(database_url=box.database_url, rabbitmq_url=box.rabbitmq_url)
    engine = create_engine(settings, pool_size=1, application_name="orders-bench")
    try:
        with closing(box.connect()) as connection, connection.cursor() as cursor:
            # Each run has orders of its own: the feed's fresh poll would adopt the last run's too.
            cursor.execute("TRUNCATE executions, feed_cursors, orders CASCADE")
        # In chunks: the repository takes an advisory lock per order, and PostgreSQL's lock table
        # (max_locks_per_transaction) holds a few thousand per transaction, not 20,000.
        for chunk in range(0, orders, STORE_CHUNK):
            store_orders(engine, min(STORE_CHUNK, orders - chunk), quantity=100)
    finally:
        engine.dispose()
    _declare_queues(box.rabbitmq_url, prefix)
    expected = orders * (1 + fills)
    budget_s = (expected / offered if offered else 0.0) + SLACK_S
    env = {
        **os.environ,
        "DATABASE_URL": box.database_url,
        "RABBITMQ_URL": box.rabbitmq_url,
        "EXECUTION_QUEUE_PREFIX": prefix,
        "EXECUTION_PARTITIONS": str(PARTITIONS),
        "APPLIER_HEARTBEAT_FILE": str(workdir / "applier.heartbeat"),
        "INGESTOR_HEARTBEAT_FILE": str(workdir / "ingestor.heartbeat"),
    }
    port = _free_port()
    env["FEED_URL"] = f"ws://127.0.0.1:{port}/executions"
    feed_command = [
        str(BIN / "orders-exchange-feed"),
        "--clean",
        "--port",
        str(port),
        "--state-dir",
        str(workdir / "feed-state"),
        "--rate",
        str(offered),
        "--fills-per-order",
        str(fills),
        "--late-commit-window",
        "0",
    ]
    with closing(box.connect()) as connection, connection.cursor() as cursor:
        with _processes(
            {
                "applier": [str(BIN / "orders-applier")],
                "ingestor": [str(BIN / "orders-ingestor")],
                "feed": feed_command,
            },
            env,
            workdir,
        ) as started_processes:
            pids = {name: process.pid for name, process in started_processes.items()}
            meter = CpuMeter(pids, _USERS)
            profilers = _profile(pids, workdir) if profile else []
            meter.start()
            started = time.monotonic()
            applied = 0
            while applied < expected and time.monotonic() - started < budget_s:
                time.sleep(POLL_S)
                cursor.execute("SELECT count(*) FROM executions")
                applied = int(scalar(cursor))
                _check_alive(started_processes)
            elapsed = time.monotonic() - started
            split = meter.stop()
            for profiler in profilers:  # py-spy writes its file when told to stop
                profiler.send_signal(signal.SIGINT)
            for profiler in profilers:
                try:
                    profiler.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    profiler.kill()
                    profiler.wait(timeout=5)
        cursor.execute(
            "SELECT extract(epoch FROM reported_at)::float8, extract(epoch FROM applied_at)::float8"
            " FROM executions"
        )
        pairs = [(float(reported), float(applied_at)) for reported, applied_at in cursor.fetchall()]
    _delete_queues(box.rabbitmq_url, prefix)
    first, last, logged = log_span(the_only_log(workdir / "feed-state").read_text().splitlines())
    lags = lags_ms(pairs)
    return FeedRun(
        offered=offered,
        reports=expected,
        applied=len(pairs),
        rate=end_to_end_rate(first, [applied_at for _, applied_at in pairs]),
        feed_rate=logged / (last - first) if last > first else math.nan,
        p50_ms=percentile(lags, 50),
        p95_ms=percentile(lags, 95),
        p99_ms=percentile(lags, 99),
        max_ms=lags[-1] if lags else math.nan,
        cores={name: round(seconds / elapsed, 2) for name, seconds in split.items()},
        cpu_ms_per_report=(
            sum(split.get(name, 0.0) for name in ("ingestor", "applier", "postgres", "rabbitmq"))
            / len(pairs)
            * 1000
            if pairs
            else math.nan
        ),
    )


def rows(runs: Sequence[FeedRun], baseline: ceilings.Ceiling) -> list[Row]:
    """The baseline's row, then one per run, in :mod:`bench.report`'s table."""
    result = [
        Row(
            "RabbitMQ confirmed publishes, 1 process",
            baseline.connections,
            baseline.rate,
            baseline.p50_ms,
            baseline.p95_ms,
            baseline.p99_ms,
            baseline.max_ms,
            note="baseline: the ingestor's batch unconfirmed",
        )
    ]
    for run in runs:
        cores = ", ".join(
            f"{name} {run.cores.get(name, 0.0):.2f}"
            for name in ("feed", "ingestor", "applier", "postgres", "rabbitmq", "other")
        )
        result.append(
            Row(
                f"execution feed, offered {_offered(run.offered)}",
                None,
                run.rate,
                run.p50_ms,
                run.p95_ms,
                run.p99_ms,
                run.max_ms,
                errors=run.reports - run.applied,
                ratio=ratio(run.rate, baseline.rate, "of publishes"),
                note=(
                    f"target {'MET' if run.target_met else 'MISSED'}; feed logged {run.feed_rate:.0f}/s;"
                    f" cores: {cores}"
                ),
            )
        )
    return result


def measure_all(
    box: Sandbox, orders: int, fills: int, rates: Sequence[float], workdir: Path, *, profile: bool = False
) -> tuple[ceilings.Ceiling, list[FeedRun]]:
    """The baseline, then every offered rate, in the same run."""
    baseline = ceilings.confirmed_publishes(
        box.rabbitmq_url, "bench-feed-baseline", BASELINE_WINDOW, BASELINE_S, workdir / "baseline"
    )
    runs = []
    for step, offered in enumerate(rates):
        print(f"bench: execution feed, offered {_offered(offered)}", flush=True)
        runs.append(measure(box, orders, fills, offered, workdir / f"feed-{step}", step, profile=profile))
    return baseline, runs


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module's docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.execution_feed", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--orders", type=int, default=DEFAULT_ORDERS, help="placed orders per run (default 20000)"
    )
    parser.add_argument("--fills", type=int, default=DEFAULT_FILLS, help="fills per order (default 2)")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        default=list(DEFAULT_RATES),
        help="offered reports/s; 0: as fast as possible",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the feed, the ingestor and the applier; print their hot spots",
    )
    arguments = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="orders-bench-feed-"))
    print(f"bench: logs and raw figures in {workdir}; load {_load()}", flush=True)
    with sandbox() as box:
        baseline, runs = measure_all(
            box, arguments.orders, arguments.fills, arguments.rates, workdir, profile=arguments.profile
        )
    (workdir / "results.json").write_text(
        json.dumps({"baseline": asdict(baseline), "runs": [asdict(run) for run in runs]}, indent=2)
    )
    print(table(rows(runs, baseline)))
    print(verdict(runs))
    for path in sorted(workdir.glob("feed-*/*.pyspy.txt")):
        print(f"bench: {path.relative_to(workdir)}: where the samples are (share of the process's samples)")
        lines = path.read_text().splitlines()
        for label, within in (("own time", None), ("in our code", "orders_api/")):
            print(f"  {label}:")
            for share, frame in hot_frames(lines, within):
                print(f"    {share:5.1%}  {frame}")
    print(f"bench: load {_load()}")


def _offered(rate: float) -> str:
    return f"{rate:.0f}/s" if rate else "max"


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _declare_queues(url: str, prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for declaration in execution_queue_declarations(prefix, PARTITIONS):
            channel.queue_declare(declaration.name, durable=True, arguments=declaration.arguments)
    finally:
        connection.close()


def _delete_queues(url: str, prefix: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for declaration in execution_queue_declarations(prefix, PARTITIONS):
            channel.queue_delete(declaration.name)
    finally:
        connection.close()


@contextmanager
def _processes(
    commands: dict[str, list[str]], env: dict[str, str], workdir: Path
) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Start each command (its output in ``<name>.log``); SIGTERM all on the way out, kill the stragglers."""
    started: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, command in commands.items():
            with (workdir / f"{name}.log").open("wb") as log:
                started[name] = subprocess.Popen(
                    command,
                    cwd=PROJECT_ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        yield started
    finally:
        for process in started.values():
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for process in started.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


def _profile(pids: dict[str, int], workdir: Path) -> list[subprocess.Popen[bytes]]:
    """``py-spy record`` on each process, until SIGINT or the process's end."""
    return [
        subprocess.Popen(
            [
                str(BIN / "py-spy"),
                "record",
                "--rate",
                "50",
                "--format",
                "raw",
                "--pid",
                str(pid),
                "--output",
                str(workdir / f"{name}.pyspy.txt"),
            ],
            stdout=(workdir / f"{name}.pyspy.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for name, pid in pids.items()
    ]


def _check_alive(started: dict[str, subprocess.Popen[bytes]]) -> None:
    for name, process in started.items():
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited during the run (status {process.returncode}); see its log")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


if __name__ == "__main__":
    main()
