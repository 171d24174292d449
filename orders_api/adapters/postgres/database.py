"""PostgreSQL connections: the URL's driver and engine options under which no wait is unbounded.

The server bounds what it runs (``statement_timeout``, ``idle_in_transaction_session_timeout``),
but a server that is frozen (SIGSTOP, a stalled disk, a paused VM) or cut off by a partition
enforces nothing, and its sockets stay open. The client bounds its own waits twice:

- :func:`bound_database_waits` makes psycopg2 wait for every reply through a callback with a
  deadline, so no statement, COMMIT or connection attempt waits longer than
  ``DB_REPLY_TIMEOUT_S``: past it the connection is closed and the caller gets an error.
  A stopped process on a live kernel is only noticed this way, since its kernel still
  acknowledges data and keepalive probes.
- TCP keepalives and ``tcp_user_timeout`` (libpq parameters) make the kernel drop a connection
  whose peer has gone silent (a partition, a dead host), including an idle one in the pool.
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import psycopg2
import psycopg2.extensions
import sqlalchemy as sa
from gevent import monkey
from gevent import socket as gevent_socket

from orders_api.settings.shared import Settings

#: Seconds a connection may be idle before the kernel probes its peer, seconds between probes,
#: and unanswered probes before it drops the connection: a silent peer is noticed within 11 s.
KEEPALIVES_IDLE_S = 5
KEEPALIVES_INTERVAL_S = 2
KEEPALIVES_COUNT = 3
#: Milliseconds sent data may stay unacknowledged before the kernel drops the connection.
TCP_USER_TIMEOUT_MS = 10_000


#: Waits until a descriptor is ready (for reading, or for writing) or some seconds have passed.
_Wait = Callable[[int, float], None]


def silent_peer_options() -> dict[str, int]:
    """Libpq parameters that have the kernel drop a connection whose peer went silent.

    Safe for any connection, a long migration's included: they never end a statement that the
    server is running, only a connection nobody answers at the TCP level.
    """
    return {
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE_S,
        "keepalives_interval": KEEPALIVES_INTERVAL_S,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
    }


def bound_database_waits(reply_timeout_s: float) -> None:
    """Make every psycopg2 wait in this process end within ``reply_timeout_s``.

    A process-wide wait callback (psycopg2's "green" mode): libpq runs non-blocking and the
    callback waits on the socket. When the deadline passes it raises ``OperationalError``;
    psycopg2 then closes the connection, which SQLAlchemy sees as a disconnect and drops from
    its pool. Under gevent (the workers) it waits with gevent's own socket waits, as psycogreen
    did, so the other greenlets run meanwhile; elsewhere with ``select``.
    """
    wait_readable, wait_writable = _socket_waits()

    def wait(connection: psycopg2.extensions.connection) -> None:
        deadline = time.monotonic() + reply_timeout_s
        while True:
            state = connection.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise psycopg2.OperationalError(f"PostgreSQL did not answer within {reply_timeout_s:g} s")
            if state == psycopg2.extensions.POLL_READ:
                wait_readable(connection.fileno(), remaining)
            elif state == psycopg2.extensions.POLL_WRITE:
                wait_writable(connection.fileno(), remaining)
            else:
                raise psycopg2.OperationalError(f"unexpected poll state {state!r}")

    psycopg2.extensions.set_wait_callback(wait)


def _socket_waits() -> tuple[_Wait, _Wait]:
    """Waits for readable and writable sockets: gevent's where gevent has patched the process.

    gevent's monkey-patched ``select`` works too, but builds a watcher and a result for every
    call; its ``wait_read``/``wait_write`` wait on one watcher, which under the workers' load
    kept the gap between the exchange's answer and its record at what psycogreen gave
    (docs/benchmarks.md).
    """
    if not monkey.is_module_patched("socket"):
        return (
            lambda fd, timeout_s: _ignore(select.select([fd], [], [], timeout_s)),
            lambda fd, timeout_s: _ignore(select.select([], [fd], [], timeout_s)),
        )

    def readable(fd: int, timeout_s: float) -> None:
        with suppress(TimeoutError):
            gevent_socket.wait_read(fd, timeout=timeout_s)

    def writable(fd: int, timeout_s: float) -> None:
        with suppress(TimeoutError):
            gevent_socket.wait_write(fd, timeout=timeout_s)

    return readable, writable


def _ignore(_result: object) -> None:
    """Discard a wait's result: the caller polls the connection again either way."""


def sqlalchemy_url(database_url: str) -> sa.URL:
    """Parse ``database_url`` and pin the psycopg2 driver, which SQLAlchemy 2.1 no longer picks by default."""
    url = sa.make_url(database_url)
    return url.set(drivername="postgresql+psycopg2") if url.drivername == "postgresql" else url


def engine_options(
    settings: Settings,
    *,
    pool_size: int | None = None,
    application_name: str = "orders-api",
    autocommit: bool = False,
) -> dict[str, Any]:
    """Engine options under which no database wait is unbounded.

    ``statement_timeout`` also bounds lock waits, including a worker waiting on the advisory
    lock of an order whose creating transaction is still open. ``application_name`` names the
    connections in ``pg_stat_activity``, so an operator (or the benchmark) can tell whose they are.
    ``autocommit`` suits callers whose every statement stands alone: it saves the ``BEGIN`` and
    ``COMMIT`` round trips around each.
    """
    server_options = (
        f"-c statement_timeout={settings.statement_timeout_ms}"
        f" -c idle_in_transaction_session_timeout={settings.idle_in_transaction_timeout_ms}"
    )
    options: dict[str, Any] = {
        "pool_size": pool_size or settings.db_pool_size,
        "max_overflow": 0,
        "pool_timeout": settings.db_pool_timeout_s,
        "pool_pre_ping": settings.db_pool_pre_ping,
        "connect_args": {
            "connect_timeout": max(1, round(settings.connect_timeout_s)),
            **silent_peer_options(),
            "options": server_options,
            "application_name": application_name,
        },
    }
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return options


def create_engine(
    settings: Settings,
    *,
    pool_size: int | None = None,
    application_name: str = "orders-api",
    autocommit: bool = False,
) -> sa.Engine:
    """Create an engine for ``settings.database_url`` with :func:`engine_options`."""
    return sa.create_engine(
        sqlalchemy_url(settings.database_url),
        **engine_options(
            settings, pool_size=pool_size, application_name=application_name, autocommit=autocommit
        ),
    )


def unpooled_engine(
    database_url: str | sa.URL, *, connect_timeout_s: float = 5, autocommit: bool = False
) -> sa.Engine:
    """An engine whose every connection opens for one use and closes after, for one-off commands.

    Creating the database and migrating it use it, never serving. No reply deadline, since a
    migration may rightly run long; a server gone silent is still noticed (:func:`silent_peer_options`).
    """
    url = sqlalchemy_url(database_url) if isinstance(database_url, str) else database_url
    return sa.create_engine(
        url,
        poolclass=sa.pool.NullPool,
        connect_args={"connect_timeout": max(1, round(connect_timeout_s)), **silent_peer_options()},
        isolation_level="AUTOCOMMIT" if autocommit else "READ COMMITTED",
    )
