"""A greenlet's uncaught error as one log line, not as a traceback gevent prints over many.

gevent's hub writes the traceback of a greenlet that failed straight to stderr
(``Hub.print_exception``), bypassing logging: several lines of plain text in a log where every
line is a JSON object. Seen at a worker process's exit, when interpreter shutdown waits for the
patched threads. Routing it through logging keeps the error, with its traceback, in one line.
"""

from __future__ import annotations

import logging
from types import TracebackType

logger = logging.getLogger("gevent")


def _log_greenlet_error(
    hub: object,
    context: object,
    error_type: type[BaseException] | None,
    error: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    details = (error_type, error, traceback) if error_type is not None and error is not None else None
    logger.error("greenlet %s failed", context, exc_info=details)


def log_greenlet_errors() -> None:
    """Make every gevent hub log a failed greenlet's error instead of printing it."""
    from gevent.hub import Hub

    Hub.print_exception = _log_greenlet_error
