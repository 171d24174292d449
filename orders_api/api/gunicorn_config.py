"""gunicorn's settings for the API, the one place `make run`, the tests and the image take them from.

Loaded with ``gunicorn --config python:orders_api.api.gunicorn_config orders_api.wsgi:app``;
flags given on the command line still win. Each setting comes from the environment
(:class:`~orders_api.settings.api.ApiSettings`), so a Kubernetes ConfigMap changes it without a
new image.
"""

from __future__ import annotations

from typing import Protocol

from orders_api.logging_setup import logging_config
from orders_api.metrics_directory import MULTIPROC_DIR_VARIABLE, fresh_metrics_directory
from orders_api.settings.api import ApiSettings
from orders_api.settings.base import load

# Read here, in the master, before any worker is forked: a bad value, or settings out of order,
# stop gunicorn (and `gunicorn --check-config`) with one line each.
settings = load(ApiSettings)
#: ``BIND`` if set (the image sets ``0.0.0.0:8000``), else loopback on ``PORT``.
bind = settings.bind or f"127.0.0.1:{settings.port}"
#: Threads, not gevent (:class:`~orders_api.settings.api.ApiSettings` says why).
worker_class = "gthread"
workers = settings.web_workers
threads = settings.web_threads
graceful_timeout = settings.graceful_timeout_s
#: Otherwise every gunicorn on a machine shares ``~/.gunicorn/gunicorn.ctl``, and a read-only
#: root filesystem has no home to put it in.
control_socket_disable = True
#: Every line as JSON (``LOG_FORMAT=text`` for plain lines): gunicorn's own, the app's, and the
#: access log, which a ``logconfig_dict`` turns on, one line per response with its request id.
logconfig_dict = logging_config(settings, gunicorn=True)
logger_class = "orders_api.api.access_log.AccessLogger"


class _Worker(Protocol):
    pid: int


def on_starting(server: object) -> None:
    """Give this server's web workers an empty multiprocess metrics directory (see ``GET /metrics``).

    Runs once in the master, before any worker is forked, so every worker inherits the variable.
    """
    fresh_metrics_directory([MULTIPROC_DIR_VARIABLE], prefix="orders-api-metrics-")


def child_exit(server: object, worker: _Worker) -> None:
    """Drop a dead web worker's live gauges from the scrape; its counters stay, as they should."""
    from prometheus_client import multiprocess  # imported only once the directory is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]  # untyped upstream
