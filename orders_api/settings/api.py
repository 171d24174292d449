"""The API's server: gunicorn's address, size and graceful timeout, on top of the shared settings.

Read by gunicorn's master as it loads its config (:mod:`orders_api.api.gunicorn_config`),
before it forks a worker; the app in each worker reads :class:`~orders_api.settings.shared.Settings`.
"""

from __future__ import annotations

from pydantic import Field

from orders_api.settings.shared import Settings


class ApiSettings(Settings):
    """``gunicorn --config python:orders_api.api.gunicorn_config orders_api.wsgi:app``."""

    #: The image sets ``0.0.0.0:8000``: every interface inside the container.
    bind: str | None = Field(
        None, description="Where gunicorn listens, `host:port`; unset: 127.0.0.1 on PORT."
    )
    port: int = Field(
        8000, ge=0, le=65535, description="The loopback port gunicorn listens on when BIND is unset."
    )
    web_workers: int = Field(2, ge=1, description="gunicorn worker processes.")
    #: Threads, not gevent: the API's waits (PostgreSQL, the broker's confirm) are short and
    #: bounded, and gthread gave the best tail latency here (docs/benchmarks.md).
    web_threads: int = Field(32, ge=1, description="Request threads per gunicorn worker process.")
    #: Above a lost COMMIT's lookup (``COMMIT_OUTCOME_WAIT_S`` and its last look, 25 s), the longest
    #: wait of a request (docs/timeouts.md). Kubernetes' grace period must exceed it plus the
    #: preStop pause.
    graceful_timeout_s: int = Field(
        30, ge=1, description="Time a gunicorn worker has, after SIGTERM, to answer the requests it accepted."
    )
