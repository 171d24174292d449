"""``python -m workers.dramatiq_cli``: ``dramatiq-gevent``, with the service's logging in its main process.

Dramatiq's CLI calls ``logging.basicConfig`` with a text format of its own in its main process;
``basicConfig`` does nothing when the root logger already has a handler, so configuring logging
first makes the main process's lines (booting, signals, a worker process that died) JSON like
the rest. The worker processes it forks start with the same configuration, and
:mod:`workers.main` configures theirs again once the CLI has pointed their ``sys.stderr`` at the
pipe to the main process. Otherwise this does what the ``dramatiq-gevent`` script does: patch the
standard library for gevent before anything else is imported, then run the CLI.
"""

from __future__ import annotations

import sys


def main() -> int:
    """Run Dramatiq's CLI with ``sys.argv``; return its exit status."""
    from gevent import monkey  # gevent patches before anything else is imported

    monkey.patch_all()
    from dramatiq.cli import main as dramatiq_main

    from orders_api.logging_setup import configure_logging
    from orders_api.settings.base import load
    from orders_api.settings.logs import LoggingSettings
    from workers.greenlet_errors import log_greenlet_errors

    configure_logging(load(LoggingSettings))
    log_greenlet_errors()
    status: int = dramatiq_main()  # type: ignore[no-untyped-call]
    return status


if __name__ == "__main__":
    sys.exit(main())
