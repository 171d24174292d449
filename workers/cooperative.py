"""Let psycopg2 yield to other greenlets when the workers run under gevent (``dramatiq-gevent``).

gevent's monkey-patching makes sockets, sleeps and locks cooperative, but psycopg2 talks to
PostgreSQL in C, through libpq: without a wait callback, one greenlet waiting on a query would
block every other greenlet of its process.
"""

from __future__ import annotations

from gevent import monkey
from psycogreen.gevent import patch_psycopg


def make_database_driver_cooperative() -> None:
    """Install psycogreen's wait callback if gevent has patched this process; otherwise do nothing.

    The threaded ``dramatiq`` CLI and in-process test workers need no callback: libpq releases
    the GIL while it waits.
    """
    if monkey.is_module_patched("socket"):
        patch_psycopg()
