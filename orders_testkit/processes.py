"""Real gunicorn and dramatiq processes for the end-to-end tests, the fault suite and the benchmark.

Each is started and stopped within bounds. The commands are those of ``scripts/run.sh`` (the
binaries of the virtualenv running pytest), pointed at the test's own database, vhost and
placement queue through the same environment variables a deployment sets. Each process writes
stdout and stderr to a log file of its own, so a test can count what the workers logged and a
failure can show what the processes said.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

import requests

from orders_api.api import gunicorn_config
from orders_api.metrics_directory import MULTIPROC_DIR_VARIABLE
from orders_api.settings.shared import Settings
from orders_api.settings.workers import WorkerSettings
from orders_testkit.json_logs import read_messages
from workers.serve import DRAMATIQ_METRICS_DIR_VARIABLE, worker_command

#: The project root: the processes run from here, as under ``make run``.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The virtualenv's scripts: the one whose Python runs these tests.
BIN = Path(sys.executable).parent
#: Seconds both processes have to start and report that they are ready.
START_TIMEOUT_S = 30.0
#: Seconds both processes have to stop after SIGTERM before they are killed.
STOP_TIMEOUT_S = 20.0
#: Line dramatiq logs once per worker process when its consumers are running.
WORKER_READY_LINE = "Worker process is ready for action."
#: Lines of each log shown when something goes wrong.
LOG_TAIL_LINES = 60

_POLL_INTERVAL_S = 0.1


class ServiceProcessError(AssertionError):
    """A process did not start, died, or did not stop in time; the message carries the logs' tails."""


@dataclass(frozen=True)
class ProcessOptions:
    """How many processes and threads to run, and any extra environment (say, a shorter backoff)."""

    web_workers: int = 2
    web_threads: int = 16
    worker_processes: int = 2
    worker_threads: int = 32
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: The module the dramatiq CLI loads: the production entry point, or a test's own wiring of it.
    worker_module: str = "workers.main"


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes]
    command: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)


class RunningService:
    """The API and the workers of one test, with their logs."""

    def __init__(
        self, base_url: str, api: _Process, workers: _Process, options: ProcessOptions | None = None
    ) -> None:
        self.base_url = base_url
        self._api = api
        self._workers = workers
        self._options = options or ProcessOptions()
        self._earlier_worker_logs: list[Path] = []
        self._stopped = False
        #: Where the workers' Prometheus metrics are served (Dramatiq's exposition server).
        self.worker_metrics_url = ""

    @property
    def api_pid(self) -> int:
        """The gunicorn master's pid; its children are the web workers."""
        return self._api.popen.pid

    @property
    def workers_pid(self) -> int:
        """The dramatiq CLI's pid; its children are the worker processes."""
        return self._workers.popen.pid

    def wait_for_exit(self, which: Literal["api", "workers"], timeout_s: float) -> int | None:
        """Wait up to ``timeout_s`` for the API or the workers, signalled by the test, to exit.

        Returns the exit status, or ``None`` if the process still runs at the deadline.
        """
        process = self._api if which == "api" else self._workers
        try:
            return process.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    @property
    def api_log(self) -> Path:
        """The API's log: gunicorn's lines and the application's."""
        return self._api.log

    @property
    def worker_log(self) -> Path:
        """The current run's log of the workers."""
        return self._workers.log

    @property
    def worker_logs(self) -> list[Path]:
        """The log of each run of the workers, oldest first: more than one after :meth:`restart_workers`."""
        return [*self._earlier_worker_logs, self.worker_log]

    def worker_log_text(self) -> str:
        """Everything the workers have logged so far, in every run."""
        return "".join(log.read_text(encoding="utf-8", errors="replace") for log in self.worker_logs)

    def restart_workers(self, *, database_up: bool = True) -> None:
        """Start the workers afresh, logging to a new file, once the test has killed them; wait until ready.

        Without ``database_up`` (restarted during a database outage) the API is not asked to
        answer: only the workers' readiness is waited for.

        :raises ServiceProcessError: the workers still run, or the new ones did not become ready.
        """
        try:
            self._workers.popen.wait(timeout=5)
        except subprocess.TimeoutExpired as still_running:
            message = f"{self._workers.name} still runs: kill it before restarting it"
            raise ServiceProcessError(message) from still_running
        _kill_group(self._workers.popen.pid)
        self._workers.log_file.close()
        self._earlier_worker_logs.append(self._workers.log)
        log = self._workers.log.with_name(f"{self._workers.log.stem}-{len(self._earlier_worker_logs)}.log")
        self._workers = _start(self._workers.name, self._workers.command, self._workers.env, log)
        _wait_until_ready(self, self._options, api=database_up)

    def log_tails(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of each log, for a failure message."""
        return "\n".join(_tail(process, lines) for process in (self._api, self._workers))

    def check_alive(self) -> None:
        """Fail, with the logs' tails, if either process has exited."""
        dead = [
            f"{process.name} exited with status {process.popen.returncode}"
            for process in (self._api, self._workers)
            if process.popen.poll() is not None
        ]
        if dead:
            raise ServiceProcessError(f"{'; '.join(dead)}\n{self.log_tails()}")

    def stop(self) -> list[str]:
        """SIGTERM both processes, wait for them, and kill whatever outlives the deadline.

        Idempotent. Returns the names of the processes that had to be killed.
        """
        if self._stopped:
            return []
        self._stopped = True
        processes = (self._api, self._workers)
        for process in processes:
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        killed = []
        for process in processes:
            try:
                process.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                killed.append(process.name)
            # Also reaps children left behind by a parent that exited or was killed: each
            # process leads a session of its own, so its group id is its pid.
            _kill_group(process.popen.pid)
            process.popen.wait(timeout=5)
            process.log_file.close()
        return killed


@contextmanager
def running_service(
    settings: Settings, log_dir: Path, options: ProcessOptions | None = None
) -> Iterator[RunningService]:
    """Start the API and the workers for ``settings``, yield once both are ready, stop both after.

    :raises ServiceProcessError: a process did not become ready within :data:`START_TIMEOUT_S`,
        or did not stop within :data:`STOP_TIMEOUT_S` and had to be killed.
    """
    options = options or ProcessOptions()
    port = free_port()
    env = service_environment(settings, options)
    metrics_port = free_port()
    # As under `make run`: a metrics directory for each server, emptied by it when it starts, and
    # the workers' metrics on a port of this test's own instead of 9191.
    api_env = {**env, MULTIPROC_DIR_VARIABLE: str(log_dir / "api-metrics")}
    workers_env = {
        **env,
        DRAMATIQ_METRICS_DIR_VARIABLE: str(log_dir / "worker-metrics"),
        MULTIPROC_DIR_VARIABLE: str(log_dir / "worker-metrics"),
        "dramatiq_prom_host": "127.0.0.1",
        "dramatiq_prom_port": str(metrics_port),
    }
    with ExitStack() as stack:
        api = _start(
            "api (gunicorn)",
            [
                str(BIN / "gunicorn"),
                "--config",
                f"python:{gunicorn_config.__name__}",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(options.web_workers),
                "--threads",
                str(options.web_threads),
                "orders_api.wsgi:app",
            ],
            api_env,
            log_dir / "api.log",
        )
        stack.callback(_stop_quietly, api)
        workers = _start(
            "workers (dramatiq)",
            # The command `make run` and the image run, with this test's pool size.
            worker_command(
                WorkerSettings.model_construct(
                    worker_processes=options.worker_processes, worker_threads=options.worker_threads
                ),
                options.worker_module,
            ),
            workers_env,
            log_dir / "workers.log",
        )
        stack.callback(_stop_quietly, workers)
        service = RunningService(f"http://127.0.0.1:{port}", api, workers, options)
        service.worker_metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        _wait_until_ready(service, options)
        stack.pop_all()
    try:
        yield service
    finally:
        killed = service.stop()
    if killed:
        raise ServiceProcessError(
            f"{', '.join(killed)} did not stop within {STOP_TIMEOUT_S:.0f} s of SIGTERM and was killed\n"
            f"{service.log_tails()}"
        )


def service_environment(settings: Settings, options: ProcessOptions) -> dict[str, str]:
    """The environment of both processes: this one's, minus Flask overrides, plus the test's targets."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLASK_")}
    env.update(
        DATABASE_URL=settings.database_url,
        RABBITMQ_URL=settings.rabbitmq_url,
        PLACEMENT_QUEUE=settings.placement_queue,
        # The workers check the queues' policies through it at boot.
        RABBITMQ_MANAGEMENT_URL=settings.rabbitmq_management_url or "",
        # As under `make run`: each worker process sizes its database pool by its thread count.
        WORKER_THREADS=str(options.worker_threads),
        PYTHONUNBUFFERED="1",
    )
    env.update(options.extra_env)
    return env


def _start(name: str, command: list[str], env: Mapping[str, str], log: Path) -> _Process:
    log_file = log.open("wb")
    try:
        popen = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except BaseException:
        log_file.close()
        raise
    return _Process(name, popen, log, log_file, command, env)


def _wait_until_ready(service: RunningService, options: ProcessOptions, *, api: bool = True) -> None:
    """Wait until every worker process reports ready and, with ``api``, the API answers a lookup with 404."""
    deadline = time.monotonic() + START_TIMEOUT_S
    probe = f"{service.base_url}/orders/{uuid.uuid4()}"
    api_ready, workers_ready = not api, False
    last_answer = "no answer yet"
    with requests.Session() as session:
        while time.monotonic() < deadline:
            service.check_alive()
            if not api_ready:
                try:
                    response = session.get(probe, timeout=2)
                    api_ready = response.status_code == 404
                    last_answer = f"GET {probe} gave {response.status_code}"
                except requests.RequestException as error:
                    last_answer = f"GET {probe} failed: {error}"
            if not workers_ready:
                # The current run's log only: after a restart, the earlier runs' lines do not count.
                current_log = read_messages(service.worker_log)
                workers_ready = current_log.count(WORKER_READY_LINE) >= options.worker_processes
            if api_ready and workers_ready:
                return
            time.sleep(_POLL_INTERVAL_S)
    raise ServiceProcessError(
        f"not ready within {START_TIMEOUT_S:.0f} s: api ready={api_ready} ({last_answer}), "
        f"workers ready={workers_ready} (want {options.worker_processes} x {WORKER_READY_LINE!r})\n"
        f"{service.log_tails()}"
    )


def _stop_quietly(process: _Process) -> None:
    """Stop a process whose service never became ready: the startup error is what matters."""
    if process.popen.poll() is None:
        process.popen.send_signal(signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.popen.wait(timeout=STOP_TIMEOUT_S)
    _kill_group(process.popen.pid)
    process.popen.wait(timeout=5)
    process.log_file.close()


def _kill_group(pgid: int) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _tail(process: _Process, lines: int) -> str:
    try:
        text = process.log.read_text(encoding="utf-8", errors="replace")
    except OSError as error:
        text = f"(cannot read {process.log}: {error})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"----- last {lines} lines of {process.name}, {process.log} -----\n{tail}"
