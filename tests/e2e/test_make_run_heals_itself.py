"""``make run`` heals itself: ``scripts/run.sh``, started as ``make run`` starts it, restarts what dies.

One dramatiq worker process is SIGKILLed (the dramatiq CLI then stops the others and exits: that
is Dramatiq's design, checked here on the real CLI), then the gunicorn master; the supervisor
restarts each, says so, and orders are taken and placed again. SIGTERM then stops the whole
stack: every process the test saw is gone within a bound, and the supervisor exits 143.

Processes are found in ``/proc`` (Linux) as the supervisor's children and theirs, and each is
recorded with its start time, so that a pid the kernel hands to someone else is never mistaken
for one of the stack's, nor killed by the clean-up.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import pytest
import requests

from orders_api.settings.shared import Settings
from orders_testkit.json_logs import messages, records
from orders_testkit.processes import BIN, PROJECT_ROOT, ProcessOptions, free_port, service_environment
from tests.e2e.test_order_flow_end_to_end import order_requests
from tests.prometheus_samples import scrape_port

pytestmark = pytest.mark.e2e

RUN_SH = PROJECT_ROOT / "scripts" / "run.sh"
#: Small pools: two worker processes, so that killing one shows the CLI stopping the other.
OPTIONS = ProcessOptions(web_workers=1, web_threads=4, worker_processes=2, worker_threads=4)
#: Seconds for the stack to start and place a first order (imports, connections, an exchange call
#: that may be refused once and retried after 1 s).
START_DEADLINE_S = 60.0
#: Seconds, after a kill, for the restart to be logged, done, and to place an order again.
RESTART_DEADLINE_S = 45.0
#: Seconds the whole stack may take to stop after SIGTERM: nothing is in flight by then.
STOP_DEADLINE_S = 30.0
#: Seconds from an order's placement to the end of its story on the exchange's feed, applied.
EXECUTION_DEADLINE_S = 20.0
#: Seconds one request may take.
REQUEST_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.1

#: What dramatiq's CLI logs when one of its worker processes dies, before it stops the others.
DRAMATIQ_UNEXPECTED_EXIT = re.compile(r"Worker with PID (\d+) exited unexpectedly \(code -9\)")
#: The logger of Dramatiq's metrics exposition process: a child of the CLI beside its worker processes.
DRAMATIQ_FORK_LOGGER = re.compile(r"dramatiq\.ForkProcess\(\d+\)")
#: What a dramatiq worker process logs on a second SIGTERM: it must never be seen here.
DRAMATIQ_KILLING_LINE = "Killing worker process..."

_T = TypeVar("_T")


class Stack:
    """The supervisor, its log, and every process seen under it (pid and start time)."""

    def __init__(
        self, supervisor: subprocess.Popen[bytes], log: Path, base_url: str, applier_metrics_port: int
    ) -> None:
        self.supervisor = supervisor
        self.log = log
        self.base_url = base_url
        self.applier_metrics_port = applier_metrics_port
        self.seen: dict[int, str] = {}  # pid -> start time, as /proc/<pid>/stat gives it

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def record(self) -> dict[int, list[int]]:
        """Record every live process under the supervisor; return the tree as children by parent."""
        table = _processes()
        children: dict[int, list[int]] = {}
        for pid, (parent, _, _) in table.items():
            children.setdefault(parent, []).append(pid)
        stack, tree = [self.supervisor.pid], {}
        while stack:
            pid = stack.pop()
            tree[pid] = sorted(children.get(pid, []))
            stack.extend(tree[pid])
            if pid in table:
                self.seen.setdefault(pid, table[pid][1])
        return tree

    def alive(self) -> list[int]:
        """The recorded processes still running (a zombie has finished: it only awaits its reaper)."""
        table = _processes()
        return [
            pid
            for pid, start in self.seen.items()
            if pid in table and table[pid][1] == start and table[pid][2] != "Z"
        ]

    def wait_for(self, condition: Callable[[], _T | None], what: str, deadline_s: float) -> _T:
        """Poll ``condition()`` (recording processes meanwhile) until it returns something truthy."""
        deadline = time.monotonic() + deadline_s
        while True:
            self.record()
            value = condition()
            if value:
                return value
            if self.supervisor.poll() is not None:
                pytest.fail(f"{what}: run.sh exited with status {self.supervisor.returncode}\n{self.tail()}")
            if time.monotonic() >= deadline:
                pytest.fail(f"{what}: not within {deadline_s:.0f} s\n{self.tail()}")
            time.sleep(POLL_INTERVAL_S)

    def child(self, marker: str, deadline_s: float, not_pid: int | None = None) -> int:
        """The pid of the supervisor's child whose command line holds ``marker`` (other than ``not_pid``)."""

        def found() -> int | None:
            for pid in self.record().get(self.supervisor.pid, []):
                if pid != not_pid and marker in _command_line(pid):
                    return pid
            return None

        return self.wait_for(found, f"a running {marker}", deadline_s)

    def order_placed(self, deadline_s: float) -> str:
        """POST an order until one is answered 201, then GET it until it is ``placed``; its id."""
        with requests.Session() as session:
            order_id = self.wait_for(lambda: self._post(session), "POST /orders answered 201", deadline_s)

            def placed() -> bool:
                response = session.get(f"{self.base_url}/orders/{order_id}", timeout=REQUEST_TIMEOUT_S)
                return response.status_code == 200 and response.json()["status"] == "placed"

            self.wait_for(placed, f"order {order_id} placed", deadline_s)
        return order_id

    def order_executed(self, order_id: str, deadline_s: float) -> dict[str, object]:
        """GET the order until the exchange's feed has brought it to the end of its story; the order."""
        final = {"filled", "cancelled", "rejected"}
        with requests.Session() as session:

            def executed() -> dict[str, object] | None:
                order: dict[str, object] = session.get(
                    f"{self.base_url}/orders/{order_id}", timeout=REQUEST_TIMEOUT_S
                ).json()
                return order if order.get("execution_status") in final else None

            return self.wait_for(executed, f"order {order_id}'s executions", deadline_s)

    def _post(self, session: requests.Session) -> str | None:
        try:
            response = session.post(
                f"{self.base_url}/orders", json=order_requests(1)[0], timeout=REQUEST_TIMEOUT_S
            )
        except requests.ConnectionError:
            return None  # not listening (yet, or again)
        return str(response.json()["id"]) if response.status_code == 201 else None

    def tail(self, lines: int = 80) -> str:
        tail = "\n".join(self.log_text().splitlines()[-lines:])
        return f"----- last {lines} lines of make run's output -----\n{tail}"


def _processes() -> dict[int, tuple[int, str, str]]:
    """Every process on the machine: parent pid, start time and state, by pid."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                # The command name, in parentheses, may hold spaces: the fields follow its last ")".
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        table[int(entry)] = (int(fields[1]), fields[19], fields[0])
    return table


def _command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextmanager
def make_run(settings: Settings, log: Path) -> Iterator[Stack]:
    """``scripts/run.sh`` as ``make run`` starts it, on this run's database and vhost; killed after.

    Whatever still runs at the end, the supervisor or any process seen under it, is SIGKILLed.
    """
    port = free_port()
    feed_port = free_port()
    applier_metrics_port = free_port()
    env = service_environment(settings, OPTIONS)
    env.update(
        VENV=str(BIN.parent),
        PORT=str(port),
        WEB_WORKERS=str(OPTIONS.web_workers),
        WEB_THREADS=str(OPTIONS.web_threads),
        WORKER_PROCESSES=str(OPTIONS.worker_processes),
        WORKER_THREADS=str(OPTIONS.worker_threads),
        # The workers' metrics on a port of this test's own, not the default 9191.
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(free_port()),
        # run.sh puts the metrics directories there: the test's own folder, removed with it.
        TMPDIR=str(log.parent),
        # The execution feed's simulator on a port and in a folder of this test's own.
        FEED_PORT=str(feed_port),
        FEED_URL=f"ws://127.0.0.1:{feed_port}/executions",
        FEED_STATE_DIR=str(log.parent / "exchange-feed"),
        # The ingestor's and the applier's metrics on ports of this test's own too.
        INGESTOR_METRICS_PORT=str(free_port()),
        APPLIER_METRICS_PORT=str(applier_metrics_port),
    )
    with log.open("wb") as output:
        supervisor = subprocess.Popen(
            ["bash", str(RUN_SH)],
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        stack = Stack(supervisor, log, f"http://127.0.0.1:{port}", applier_metrics_port)
        try:
            yield stack
        finally:
            stack.record()  # whatever started since the test last looked
            with suppress(ProcessLookupError):
                supervisor.kill()
            supervisor.wait(timeout=10)
            for pid in stack.alive():
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def test_make_run_executes_orders_restarts_a_killed_worker_pool_and_gunicorn_master_and_stops_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    with make_run(settings, tmp_path / "make-run.log") as stack:
        first = stack.order_placed(START_DEADLINE_S)
        # The exchange's feed, its ingestor and the applier run too: the order's story shows up.
        executed = stack.order_executed(first, EXECUTION_DEADLINE_S)
        executions = executed["executions"]
        assert isinstance(executions, list) and executions, executed
        # ... and the applier's metrics count its reports, with their lag.
        samples = scrape_port(stack.applier_metrics_port)
        applied = samples[("orders_execution_reports_total", frozenset({("outcome", "applied")}))]
        assert applied >= len(executions)
        assert samples[("orders_execution_lag_seconds_count", frozenset())] == applied

        # (a) One dramatiq worker process dies; the CLI stops the other and exits; the pool restarts.
        cli = stack.child("dramatiq", START_DEADLINE_S)

        def worker_processes() -> list[int] | None:
            children = stack.record().get(cli, [])
            forks = {
                int(line["process"])
                for line in records(stack.log_text(), strict=False)  # the supervisor's lines are plain text
                if DRAMATIQ_FORK_LOGGER.fullmatch(str(line.get("logger")))
            }
            found = [pid for pid in children if pid not in forks]
            complete = len(found) == OPTIONS.worker_processes and len(children) == len(found) + 1
            return found if complete else None

        victim, survivor = stack.wait_for(
            worker_processes, "both dramatiq worker processes", START_DEADLINE_S
        )
        os.kill(victim, signal.SIGKILL)
        restart_line = re.compile(
            rf"workers \(pid {cli}\) exited with status 1 after [\d.]+ s; restarting it in 1 s"
        )
        stack.wait_for(
            lambda: restart_line.search(stack.log_text()),
            "the worker pool's restart logged",
            RESTART_DEADLINE_S,
        )
        dramatiq_saw = [
            int(match[1])
            for line in messages(stack.log_text(), strict=False)  # the supervisor's lines are plain text
            if (match := DRAMATIQ_UNEXPECTED_EXIT.match(line))
        ]
        assert dramatiq_saw == [victim], stack.tail()
        assert survivor not in stack.alive(), "the dramatiq CLI exited and left a worker process running"
        new_cli = stack.child("dramatiq", RESTART_DEADLINE_S, not_pid=cli)
        stack.order_placed(RESTART_DEADLINE_S)

        # (b) The gunicorn master dies; its workers go; a new master serves again.
        api = stack.child("gunicorn", RESTART_DEADLINE_S)
        web_workers = set(stack.record()[api])
        assert len(web_workers) == OPTIONS.web_workers
        os.kill(api, signal.SIGKILL)
        api_line = re.compile(
            rf"api \(pid {api}\) was killed by SIGKILL after [\d.]+ s; restarting it in 1 s"
        )
        stack.wait_for(
            lambda: api_line.search(stack.log_text()), "gunicorn's restart logged", RESTART_DEADLINE_S
        )
        new_api = stack.child("gunicorn", RESTART_DEADLINE_S, not_pid=api)
        stack.order_placed(RESTART_DEADLINE_S)
        stack.wait_for(
            lambda: not web_workers & set(stack.alive()),
            "the killed master's web workers gone",
            RESTART_DEADLINE_S,
        )

        # Only a signal to the supervisor stops the stack: each process once, all of them, in time.
        stack.record()
        assert {new_cli, new_api} <= set(stack.alive())
        signalled = time.monotonic()
        stack.supervisor.send_signal(signal.SIGTERM)
        try:
            exit_status = stack.supervisor.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"run.sh still runs {STOP_DEADLINE_S:.0f} s after SIGTERM\n{stack.tail()}")
        stopped_s = time.monotonic() - signalled
        left = stack.alive()
        log = stack.log_text()

    print(
        f"\nmake run: the worker pool and the gunicorn master restarted after SIGKILL;"
        f" {len(stack.seen)} processes seen in all; exit status {exit_status} {stopped_s:.1f} s after SIGTERM"
    )
    assert exit_status == 143, log
    assert not left, f"still running after run.sh exited: {[_command_line(pid) for pid in left]}"
    assert DRAMATIQ_KILLING_LINE not in log, "a dramatiq worker process got a second SIGTERM"
    assert (
        "SIGTERM received: stopping api, workers, reconciliation, exchange-feed, ingestor, applier"
        " (one SIGTERM each)" in log
    )
