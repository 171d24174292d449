"""``orders-workers``: start the Dramatiq worker pool with the service's flags, the same everywhere.

``make run``, the tests' processes and the image all start the workers through this command, so
the pool's size and its shutdown timeout live in one place. It replaces itself with the
``dramatiq-gevent`` CLI (``exec``), so SIGTERM from a terminal, a supervisor or the kubelet reaches
Dramatiq directly; that CLI is run through :mod:`workers.dramatiq_cli`, which gives its main
process the service's JSON logging.
"""

from __future__ import annotations

import os
import sys

from orders_api.metrics_directory import MULTIPROC_DIR_VARIABLE, fresh_metrics_directory
from orders_api.settings.base import load
from orders_api.settings.workers import WorkerSettings

#: The module that runs ``dramatiq-gevent``'s CLI with the service's logging.
CLI_MODULE = "workers.dramatiq_cli"
#: The module the CLI imports in each worker process; it wires the broker and the actor.
WORKER_MODULE = "workers.main"
#: Where Dramatiq's Prometheus middleware keeps its metric files (read when it is imported); the
#: workers' own metrics go to the same directory, so one scrape of the metrics port shows both.
DRAMATIQ_METRICS_DIR_VARIABLE = "dramatiq_prom_db"


def worker_command(settings: WorkerSettings, module: str = WORKER_MODULE) -> list[str]:
    """The ``dramatiq-gevent`` command line for ``settings``' pool size and shutdown timeout."""
    return [
        sys.executable,
        "-m",
        CLI_MODULE,
        module,
        "--processes",
        str(settings.worker_processes),
        "--threads",
        str(settings.worker_threads),
        "--worker-shutdown-timeout",
        str(settings.worker_shutdown_timeout_ms),
    ]


def main() -> None:
    """Replace this process with the Dramatiq CLI, with an empty metrics directory for this run.

    First the workers' settings are read and checked (:func:`orders_api.settings.base.load`,
    their time bounds' order included): a bad value stops the start here, with one line, before
    any worker process is forked.

    The directory is ``dramatiq_prom_db`` or else ``PROMETHEUS_MULTIPROC_DIR`` (a new temporary
    one if neither is set); both variables are set to it for the worker processes, before any of
    them imports prometheus_client. Emptied here, once per start of the pool, because Dramatiq
    does not: files of an earlier run would be added to this run's counts.
    """
    settings = load(WorkerSettings)
    fresh_metrics_directory(
        [DRAMATIQ_METRICS_DIR_VARIABLE, MULTIPROC_DIR_VARIABLE], prefix="orders-workers-metrics-"
    )
    command = worker_command(settings)
    os.execv(command[0], command)  # noqa: S606 -- the command is ours, not input
