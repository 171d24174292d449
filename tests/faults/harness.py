"""The moving parts of one fault scenario, each bounded in time.

A scenario runs the real API and workers (``orders_testkit.processes``) on a database and a vhost of
its own on the suite's private servers, starts the load stream in a process of its own, injects
its fault once the stream is under way, waits for the stream to end and for every order to
settle, stops the processes, and only then reads the ledger: with the processes gone, no log
line is still in a pipe and no request is still being answered. The workers run the suite's own
entry point (``orders_testkit.outage_workers``), which records every placement on the exchange's
side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg2
from dramatiq.common import xq_name

from orders_api.adapters.postgres.migrate import upgrade
from orders_api.adapters.rabbitmq.queue_topology import set_up_placement_queues
from orders_api.settings.shared import Settings
from orders_testkit.fault_exchange import PLACEMENTS_FILE_ENV
from orders_testkit.processes import (
    PROJECT_ROOT,
    ProcessOptions,
    RunningService,
    ServiceProcessError,
    running_service,
)
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.faults.ledger import (
    ExchangeRecord,
    Ledger,
    OrderRow,
    exchange_record,
    outcome_unknown,
    read_answers,
    read_placements,
)
from tests.faults.servers import PrivatePostgres, PrivateRabbitMQ, child_pids

#: Requests per second of the load stream, for how long by default, and at most how many (the
#: 150 s outages' streams run about 170 s, the 10-minute one's about 620 s; each request's index
#: goes into its order's quantity).
LOAD_RATE = 25.0
LOAD_DURATION_S = 24.0
LOAD_MAX_REQUESTS = 20_000
#: Seconds one request may take before the client gives up on it.
REQUEST_TIMEOUT_S = 10.0
#: Most requests in flight at once.
LOAD_CLIENTS = 64
#: Answers recorded before the fault is injected: about 3 s into the stream.
FAULT_AFTER_ANSWERS = 75
#: Seconds, after the stream ends, within which every order must be settled.
SETTLE_TIMEOUT_S = 90.0
#: The processes of every scenario: 2 x 64 worker greenlets place up to ~250 orders/s at the
#: stand-in's 0.5 s, ten times the stream's rate, so that the backlog a 150 s outage leaves
#: (about 3,000 orders accepted as a frozen database thaws) is placed within seconds, as
#: production's 128 per process would (with 16, it took 62 s).
PROCESSES = ProcessOptions(web_workers=2, web_threads=16, worker_processes=2, worker_threads=64)
#: Short retry backoffs (200 ms doubling to 2 s instead of 1 s to 5 min), so that orders
#: retried during a fault settle within seconds of its end.
FAST_RETRIES = {"PLACEMENT_MIN_BACKOFF_MS": "200", "PLACEMENT_MAX_BACKOFF_MS": "2000"}
#: A 2 s placement time limit and a 4 s claim lease, for the scenario that leaves claims
#: behind (killed workers).
SHORT_LEASE = {"PLACEMENT_TIME_LIMIT_MS": "2000", "CLAIM_LEASE_MS": "4000"}
#: Settings of the database scenarios: a 10 s placement time limit and a 10 s claim lease, so
#: that a 25-30 s outage lasts longer than twice each.
LONG_OUTAGE_LIMITS = {"PLACEMENT_TIME_LIMIT_MS": "10000", "CLAIM_LEASE_MS": "10000"}
#: The workers' entry point in every scenario: production wiring, exchange recorded.
FAULT_WORKERS_MODULE = "orders_testkit.outage_workers"

_POLL_INTERVAL_S = 0.2


class LoadStream:
    """The running load stream: its answers so far and its end."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        answers: Path,
        log: Path,
        stop_file: Path,
        duration_s: float,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        self._popen = popen
        self._duration_s = duration_s
        self._request_timeout_s = request_timeout_s
        self.answers = answers
        self._log = log
        self._stop_file = stop_file

    def stop_after(self, seconds: float) -> None:
        """Have the stream send for ``seconds`` more, then stop (if its duration has not ended it first)."""
        written = self._stop_file.with_suffix(".tmp")
        written.write_text(f"{time.time() + seconds:.3f}", encoding="ascii")
        written.replace(self._stop_file)  # whole, so the stream never reads half a time

    def answered(self) -> int:
        """Requests answered (or given up on) so far."""
        try:
            with self.answers.open("rb") as lines:
                return sum(1 for _ in lines)
        except FileNotFoundError:
            return 0

    def wait_for_answers(self, count: int, timeout_s: float = 30.0) -> None:
        """Wait until ``count`` requests are recorded: the stream is under way."""
        deadline = time.monotonic() + timeout_s
        while self.answered() < count:
            if self._popen.poll() is not None or time.monotonic() >= deadline:
                raise AssertionError(
                    f"the load stream recorded {self.answered()} answers, not {count},"
                    f" within {timeout_s:.0f} s (exit status {self._popen.poll()}):\n"
                    + self._log.read_text(errors="replace")[-3000:]
                )
            time.sleep(_POLL_INTERVAL_S)

    def wait(self) -> None:
        """Wait for the stream to end: its last request was sent and answered or timed out."""
        bound = self._duration_s + self._request_timeout_s + 30
        try:
            status = self._popen.wait(timeout=bound)
        except subprocess.TimeoutExpired as expired:
            raise AssertionError(f"the load stream did not end within {bound:.0f} s") from expired
        if status != 0:
            raise AssertionError(
                f"the load stream exited with {status}:\n{self._log.read_text(errors='replace')}"
            )


class FaultRun:
    """One scenario's servers, settings, processes and ledger."""

    def __init__(
        self,
        settings: Settings,
        postgres: PrivatePostgres,
        rabbitmq: PrivateRabbitMQ,
        admin: RabbitAdmin,
        directory: Path,
    ) -> None:
        self.settings = settings
        self.postgres = postgres
        self.rabbitmq = rabbitmq
        self.admin = admin
        self.directory = directory
        self.service_running: RunningService | None = None
        self.placements_file = directory / "placements.log"
        self._fault_s = 0.0
        self._fault_ended_at = float("inf")
        self._stop_failure: str | None = None

    def options(self, *extra_env: dict[str, str]) -> ProcessOptions:
        """:data:`PROCESSES` with :data:`FAST_RETRIES` and ``extra_env`` in the environment.

        The workers run :data:`FAULT_WORKERS_MODULE`, recording placements in :attr:`placements_file`.
        """
        env: dict[str, str] = {**FAST_RETRIES, PLACEMENTS_FILE_ENV: str(self.placements_file)}
        for each in extra_env:
            env.update(each)
        return replace(PROCESSES, extra_env=env, worker_module=FAULT_WORKERS_MODULE)

    @contextmanager
    def service(self, options: ProcessOptions) -> Iterator[RunningService]:
        """The API and the workers on this scenario's database and vhost; stopped at the end of the block.

        If they do not stop by themselves once the block has ended, they are killed and the
        ledger says so (a check fails on it), so that the scenario's ledger is still printed.
        """
        block_ended = False
        try:
            with running_service(self.settings, self.directory, options) as running:
                self.service_running = running
                yield running
                block_ended = True
        except ServiceProcessError as error:
            if not block_ended:
                raise
            self._stop_failure = str(error).splitlines()[0]

    @contextmanager
    def load(
        self,
        service: RunningService,
        duration_s: float = LOAD_DURATION_S,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> Iterator[LoadStream]:
        """The load stream against ``service``; the block ends once the stream has (killed on error)."""
        answers, log = self.directory / "answers.jsonl", self.directory / "load.log"
        stop_file = self.directory / "load.stop"
        command = [
            sys.executable,
            "-m",
            "tests.faults.load_stream",
            f"--base-url={service.base_url}",
            f"--rate={LOAD_RATE}",
            f"--duration={duration_s}",
            f"--max-requests={LOAD_MAX_REQUESTS}",
            f"--timeout={request_timeout_s}",
            f"--clients={LOAD_CLIENTS}",
            f"--out={answers}",
            f"--stop-file={stop_file}",
        ]
        with log.open("wb") as log_file:
            popen = subprocess.Popen(
                command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
            )
            try:
                stream = LoadStream(popen, answers, log, stop_file, duration_s, request_timeout_s)
                yield stream
                stream.wait()
            finally:
                if popen.poll() is None:
                    popen.kill()
                popen.wait(timeout=10)

    @contextmanager
    def fault(self) -> Iterator[None]:
        """Time the fault injected in the block: its length and its end go into the ledger."""
        started = time.monotonic()
        try:
            yield
        finally:
            self._fault_s = time.monotonic() - started
            self._fault_ended_at = time.time()

    def _query(self, statement: str) -> list[tuple[Any, ...]]:
        """Run one read on a connection of its own: a restarted server leaves no stale connection behind."""
        with closing(psycopg2.connect(self.settings.database_url, connect_timeout=5)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall()

    def wait_until_settled(self, service: RunningService) -> None:
        """Wait up to :data:`SETTLE_TIMEOUT_S` until no order is pending; the ledger shows any left."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while time.monotonic() < deadline:
            service.check_alive()
            with suppress(psycopg2.OperationalError):
                [(pending,)] = self._query("SELECT count(*) FROM orders WHERE status = 'pending'")
                if pending == 0:
                    return
            time.sleep(_POLL_INTERVAL_S)

    def ledger(self, scenario: str, service: RunningService) -> Ledger:
        """The scenario's ledger, read once the service has stopped."""
        columns = (
            "id::text, status, created_at, placed_at, attempts, last_error, quantity, duplicate_attempts"
        )
        rows = {
            str(order_id): OrderRow(
                str(status), created_at, placed_at, int(attempts), last_error, int(quantity), tuple(twice)
            )
            for order_id, status, created_at, placed_at, attempts, last_error, quantity, twice in self._query(
                f"SELECT {columns} FROM orders"
            )
        }
        return Ledger(
            scenario=scenario,
            answers=read_answers(self.directory / "answers.jsonl"),
            rows=rows,
            exchange=self.exchange_record(service),
            dead_letters=self.dead_letters(),
            fault_s=self._fault_s,
            fault_ended_at=self._fault_ended_at,
            stop_failure=self._stop_failure,
            outcome_unknown=outcome_unknown(service.api_log.read_text(encoding="utf-8", errors="replace")),
        )

    def exchange_record(self, service: RunningService) -> ExchangeRecord:
        return exchange_record(
            [log.read_text(encoding="utf-8", errors="replace") for log in service.worker_logs],
            read_placements(self.placements_file),
        )

    def dead_letters(self) -> list[str]:
        """The order id (or, failing one, the message id) of each message in the dead-letter queue.

        Read through the management API's ``get`` with requeue, which sees every message at
        once (its statistics lag by a second); nothing consumes the queue by then.
        """
        return [
            str(body["args"][0]) if body.get("args") else str(body.get("message_id"))
            for body in self.admin.peek_bodies(xq_name(self.settings.placement_queue))
        ]


def new_fault_run(
    postgres: PrivatePostgres, rabbitmq: PrivateRabbitMQ, directory: Path, name: str
) -> FaultRun:
    """A run on a database and a vhost called ``name``, made on ``postgres`` and ``rabbitmq`` now.

    The database is migrated and the placement queues set up as ``make migrate`` does
    (``orders-broker-setup``).
    """
    database_url = f"{postgres.url}/{name}"
    upgrade(database_url)
    admin = RabbitAdmin(name, rabbitmq.management_url)
    admin.create_vhost()
    settings = Settings(
        database_url=database_url,
        rabbitmq_url=f"{rabbitmq.url}/{quote(name, safe='')}",
        placement_queue="order-placement",
        rabbitmq_management_url=rabbitmq.management_url,
    )
    set_up_placement_queues(settings)
    return FaultRun(settings, postgres, rabbitmq, admin, directory)


def kill_and_restart_workers(service: RunningService) -> int:
    """SIGKILL every worker process, then the dramatiq CLI, restart the CLI; return how many were killed.

    The worker processes die first, mid-placement, as in a crash. The CLI relays their log lines,
    and the log is how the suite counts exchange calls, so the CLI is killed only once it has
    noticed its children's death (it logs so), by which time it has copied what they wrote.
    """
    children = child_pids(service.workers_pid)
    assert children, "the dramatiq CLI has no worker processes to kill"
    for child in children:
        os.kill(child, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "exited unexpectedly" not in service.worker_log.read_text(
        errors="replace"
    ):
        time.sleep(0.05)
    with suppress(ProcessLookupError):
        os.kill(service.workers_pid, signal.SIGKILL)
    service.restart_workers()
    return len(children)


def cut_off_consumers(admin: RabbitAdmin, queue: str, timeout_s: float = 15.0) -> int:
    """Have the broker close the connections consuming ``queue``; return how many it closed.

    The management API sees consumers through statistics that lag (by a second on the private
    node), so a worker that has just started may not be listed yet: look again until one is.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        closed = admin.close_consumer_connections(queue)
        if closed:
            return closed
        time.sleep(_POLL_INTERVAL_S)
    raise AssertionError(f"no consumer of {queue} appeared in the management API within {timeout_s:.0f} s")


def kill_one_web_worker(service: RunningService, timeout_s: float = 20.0) -> int:
    """SIGKILL one gunicorn worker and wait until gunicorn has replaced it; return the killed pid."""
    before = child_pids(service.api_pid)
    assert before, "gunicorn has no worker processes to kill"
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = child_pids(service.api_pid)
        if victim not in now and len(now) >= len(before):
            return victim
        time.sleep(_POLL_INTERVAL_S)
    raise AssertionError(f"gunicorn did not replace worker {victim} within {timeout_s:.0f} s")
