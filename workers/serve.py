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
from collections.abc import Mapping

from orders_api.entrypoints.metrics_directory import MULTIPROC_DIR_VARIABLE, fresh_metrics_directory

#: The module that runs ``dramatiq-gevent``'s CLI with the service's logging.
CLI_MODULE = "workers.dramatiq_cli"
#: The module the CLI imports in each worker process; it wires the broker and the actor.
WORKER_MODULE = "workers.main"
#: Milliseconds Dramatiq waits, after SIGTERM, for the messages in flight before it stops their
#: threads (their messages then return to the queue, unacked). A placement takes 0.5 s, and an
#: exchange's answer is recorded within a few database timeouts; Kubernetes' grace period must
#: exceed it.
DEFAULT_SHUTDOWN_TIMEOUT_MS = 30_000
#: Where Dramatiq's Prometheus middleware keeps its metric files (read when it is imported); the
#: workers' own metrics go to the same directory, so one scrape of the metrics port shows both.
DRAMATIQ_METRICS_DIR_VARIABLE = "dramatiq_prom_db"


def worker_command(environ: Mapping[str, str], module: str = WORKER_MODULE) -> list[str]:
    """The ``dramatiq-gevent`` command line for ``environ``'s pool size and shutdown timeout."""
    return [
        sys.executable,
        "-m",
        CLI_MODULE,
        module,
        "--processes",
        environ.get("WORKER_PROCESSES", "2"),
        "--threads",
        environ.get("WORKER_THREADS", "128"),
        "--worker-shutdown-timeout",
        environ.get("WORKER_SHUTDOWN_TIMEOUT_MS", str(DEFAULT_SHUTDOWN_TIMEOUT_MS)),
    ]


def main() -> None:
    """Replace this process with the Dramatiq CLI, with an empty metrics directory for this run.

    The directory is ``dramatiq_prom_db`` or else ``PROMETHEUS_MULTIPROC_DIR`` (a new temporary
    one if neither is set); both variables are set to it for the worker processes, before any of
    them imports prometheus_client. Emptied here, once per start of the pool, because Dramatiq
    does not: files of an earlier run would be added to this run's counts.
    """
    fresh_metrics_directory(
        os.environ, [DRAMATIQ_METRICS_DIR_VARIABLE, MULTIPROC_DIR_VARIABLE], prefix="orders-workers-metrics-"
    )
    command = worker_command(os.environ)
    os.execv(command[0], command)  # noqa: S606 -- the command is ours, not input
