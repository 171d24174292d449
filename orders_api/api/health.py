"""Health endpoints for Kubernetes: ``GET /healthz`` (liveness) and ``GET /readyz`` (readiness).

Liveness says only that the process answers: restarting the API cannot cure a database or broker
outage, so it checks neither. Readiness asks PostgreSQL and RabbitMQ, each within about a second,
through the very pool and connection that requests use, so that an API process that cannot accept
orders is taken out of the load balancer and put back once it can.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import sqlalchemy as sa
from flask import Blueprint, Flask, Response, current_app, jsonify

from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher

logger = logging.getLogger(__name__)

#: Seconds each dependency has to answer one readiness probe.
PROBE_TIMEOUT_S = 1.0
#: Longest error text shown per check; enough for the cause, never a wall of text.
MAX_DETAIL_CHARS = 200

_PROBE_EXTENSION = "orders.readiness"

blueprint = Blueprint("health", __name__)


def init_app(app: Flask) -> None:
    """Register the endpoints on ``app`` with the state its readiness probes share."""
    app.extensions[_PROBE_EXTENSION] = _DatabaseProbe()
    app.register_blueprint(blueprint)


@blueprint.get("/healthz")
def liveness() -> Response:
    """``200`` whenever the process answers; nothing else is checked, on purpose."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readiness() -> tuple[Response, int]:
    """``200`` when PostgreSQL and RabbitMQ both answer, else ``503`` naming the one that did not."""
    deadline = time.monotonic() + PROBE_TIMEOUT_S
    probe: _DatabaseProbe = current_app.extensions[_PROBE_EXTENSION]
    engine: sa.Engine = current_app.extensions["sqlalchemy"].engine
    database = probe.start(engine)  # runs while RabbitMQ is asked, so both share the one second
    publisher: ConfirmedPublisher = current_app.extensions["orders.publisher"]
    checks = {
        "postgresql": probe.outcome(database, deadline),
        "rabbitmq": _rabbitmq_outcome(publisher, deadline),
    }
    ready = all(outcome == "ok" for outcome in checks.values())
    probe.report(ready, checks)
    return jsonify(status="ready" if ready else "unavailable", checks=checks), 200 if ready else 503


def _rabbitmq_outcome(publisher: ConfirmedPublisher, deadline: float) -> str:
    if publisher.wait_until_connected(max(0.0, deadline - time.monotonic())):
        return "ok"
    return f"unreachable: no open channel with publisher confirms within {PROBE_TIMEOUT_S:g} s"


class _DatabaseProbe:
    """``SELECT 1`` through the app's pool, in a thread of its own so that the caller's wait is bounded.

    Taking a connection can wait for the pool (``DB_POOL_TIMEOUT_S``) and opening one for the
    connect timeout, both longer than a probe may take; so the probe runs in a daemon thread and
    the request waits for it until its deadline only. At most one probe runs per process: while
    one is stuck, later requests wait on that one rather than start more threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: Future[None] | None = None
        self._was_ready: bool | None = None

    def start(self, engine: sa.Engine) -> Future[None]:
        """The probe in flight, or a new one if none is."""
        with self._lock:
            if self._running is None or self._running.done():
                running: Future[None] = Future()
                threading.Thread(
                    target=self._run, args=(engine, running), name="readiness-postgresql", daemon=True
                ).start()
                self._running = running
            return self._running

    def outcome(self, running: Future[None], deadline: float) -> str:
        """``"ok"``, or why PostgreSQL does not count as answering, by ``deadline`` at the latest."""
        try:
            running.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return f"unreachable: no answer within {PROBE_TIMEOUT_S:g} s"
        except Exception as error:
            return f"unreachable: {_describe(error)}"
        return "ok"

    def report(self, ready: bool, checks: dict[str, str]) -> None:
        """Log each change between ready and not ready, once, rather than every probe."""
        if ready == self._was_ready:
            return
        self._was_ready = ready
        if ready:
            logger.info("ready: PostgreSQL and RabbitMQ answer")
        else:
            logger.warning("not ready: %s", checks)

    @staticmethod
    def _run(engine: sa.Engine, running: Future[None]) -> None:
        try:
            with engine.connect() as connection, connection.begin():
                # SET cannot take bind parameters; the value is an int built here, never input.
                timeout_ms = int(PROBE_TIMEOUT_S * 1000)
                connection.execute(sa.text(f"SET LOCAL statement_timeout = {timeout_ms}"))
                connection.execute(sa.text("SELECT 1")).scalar_one()
        except Exception as error:
            running.set_exception(error)
        else:
            running.set_result(None)


def _describe(error: BaseException) -> str:
    """The first line of the driver's own message: the cause, without SQLAlchemy's framing."""
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig is not None else error
    lines = str(cause).strip().splitlines()
    detail = f"{type(cause).__name__}: {lines[0]}" if lines else type(cause).__name__
    return detail[:MAX_DETAIL_CHARS]
