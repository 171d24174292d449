"""gunicorn's settings for the API, the one place `make run`, the tests and the image take them from.

Loaded with ``gunicorn --config python:orders_api.entrypoints.gunicorn_config orders_api.wsgi:app``;
flags given on the command line still win. Each setting comes from the environment, so a
Kubernetes ConfigMap changes it without a new image.
"""

from __future__ import annotations

import os
from typing import Protocol

from orders_api.entrypoints.metrics_directory import MULTIPROC_DIR_VARIABLE, fresh_metrics_directory
from orders_api.logging_setup import ACCESS_LOG_FORMAT, logging_config

#: Where to listen: ``BIND`` if set (the image sets ``0.0.0.0:8000``), else loopback on ``PORT``.
bind = os.environ.get("BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"
#: Threads, not gevent: the API's waits (PostgreSQL, the broker's confirm) are short and bounded,
#: and gthread gave the best tail latency here (docs/benchmarks.md).
worker_class = "gthread"
workers = int(os.environ.get("WEB_WORKERS", "2"))
threads = int(os.environ.get("WEB_THREADS", "32"))
#: Seconds a worker has, after SIGTERM, to answer the requests it has accepted. Every wait of a
#: request is bounded well below it (group commit 5 s, confirm 2 s, a lost COMMIT's lookup aside).
#: Kubernetes' grace period must exceed it plus the preStop pause.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT_S", "20"))
#: Otherwise every gunicorn on a machine shares ``~/.gunicorn/gunicorn.ctl``, and a read-only
#: root filesystem has no home to put it in.
control_socket_disable = True
#: Every line as JSON (``LOG_FORMAT=text`` for plain lines): gunicorn's own, the app's, and the
#: access log, which a ``logconfig_dict`` turns on, one line per response with its request id.
logconfig_dict = logging_config(gunicorn=True)
access_log_format = ACCESS_LOG_FORMAT


class _Worker(Protocol):
    pid: int


def on_starting(server: object) -> None:
    """Give this server's web workers an empty multiprocess metrics directory (see ``GET /metrics``).

    Runs once in the master, before any worker is forked, so every worker inherits the variable.
    """
    fresh_metrics_directory(os.environ, [MULTIPROC_DIR_VARIABLE], prefix="orders-api-metrics-")


def child_exit(server: object, worker: _Worker) -> None:
    """Drop a dead web worker's live gauges from the scrape; its counters stay, as they should."""
    from prometheus_client import multiprocess  # imported only once the directory is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream
