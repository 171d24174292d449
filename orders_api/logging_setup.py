"""Logging for every process of the service: one JSON object per line, with the request id.

Each process kind configures logging at one place, from :func:`logging_config`: gunicorn through
``logconfig_dict`` (:mod:`orders_api.api.gunicorn_config`, which also turns its access log
into JSON lines), the Dramatiq CLI's main process in :mod:`workers.dramatiq_cli` and each worker
process in :mod:`workers.main`, and the operator commands in :mod:`orders_api.wsgi` and
:func:`orders_api.adapters.postgres.migrate.upgrade_from_environment`. The rest of the code uses plain
``logging.getLogger(__name__)`` loggers and knows nothing of the format.

A line holds ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``process``,
``thread``, ``request_id`` when one is bound (:mod:`orders_api.request_ids`), any ``extra``
fields, and ``exception``, the traceback as one string, so that a line is still one event.
``LOG_FORMAT=text`` gives plain lines for a human at a terminal; ``LOG_LEVEL`` sets the level
(:class:`~orders_api.settings.logs.LoggingSettings`, which every role's settings include).

The formatter is python-json-logger's: a :class:`logging.Formatter` like any other, so it plugs
into the standard library's ``dictConfig``, which gunicorn and Dramatiq already drive.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import threading
from types import TracebackType
from typing import Any

from pythonjsonlogger.core import LogData
from pythonjsonlogger.json import JsonFormatter

from orders_api import request_ids
from orders_api.settings.logs import LoggingSettings

#: Record attributes every JSON line carries, and the names they carry there.
JSON_FIELDS = {
    "levelname": "level",
    "name": "logger",
    "message": "message",
    "process": "process",
    "threadName": "thread",
}
#: The plain format of ``LOG_FORMAT=text``; ``-`` stands for no request id.
TEXT_FORMAT = "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s [%(request_id)s]"
#: Where every line goes: one stream keeps the lines of one process in order.
STREAM = "ext://sys.stderr"


class _ServiceJsonFormatter(JsonFormatter):
    """python-json-logger's formatter with the timestamp first, where a reader looks for it."""

    def process_log_record(self, log_data: LogData) -> LogData:
        """Put ``timestamp`` first; the rest keeps its order."""
        return {"timestamp": log_data.pop("timestamp", None), **log_data}


def json_formatter() -> logging.Formatter:
    """The JSON formatter of every process (a factory, for ``dictConfig``'s ``()`` key)."""
    return _ServiceJsonFormatter(
        list(JSON_FIELDS),
        rename_fields={**JSON_FIELDS, "exc_info": "exception"},
        timestamp=True,
    )


def text_formatter() -> logging.Formatter:
    """The plain formatter of ``LOG_FORMAT=text``."""
    return logging.Formatter(TEXT_FORMAT, defaults={"request_id": "-"})


class RequestIdFilter(logging.Filter):
    """Adds the current request id to each record that passes, unless the record names one itself.

    A filter on the handler, not on a logger, so that it sees the records of every logger that
    propagate to the handler, the libraries' included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Always let the record through; only annotate it."""
        if getattr(record, "request_id", None) is None:
            request_id = request_ids.current()
            if request_id is not None:
                record.request_id = request_id
        return True


def logging_config(settings: LoggingSettings, *, gunicorn: bool = False) -> dict[str, Any]:
    """The ``dictConfig`` of a process: the root logger, and gunicorn's own two loggers with ``gunicorn``.

    gunicorn keeps its error and access loggers apart from the root (``propagate`` off); they get
    the same stream and format; the access logger's fields come with each record
    (:class:`~orders_api.api.access_log.AccessLogger`).
    """
    level = settings.log_level
    formatter = {
        "()": f"{__name__}.{'text_formatter' if settings.log_format == 'text' else 'json_formatter'}"
    }
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": formatter},
        "filters": {
            "request_id": {"()": f"{__name__}.RequestIdFilter"},
        },
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "stream": STREAM,
                "formatter": "service",
                "filters": ["request_id"],
            },
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {},
    }
    if gunicorn:
        config["handlers"]["access"] = {
            "class": "logging.StreamHandler",
            "stream": STREAM,
            "formatter": "service",
        }
        config["loggers"] = {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        }
    return config


def configure_logging(settings: LoggingSettings) -> None:
    """Configure this process's logging (replacing any earlier configuration of the root logger).

    Python's warnings and uncaught exceptions are logged too, so that they also come out as JSON
    lines rather than as bare tracebacks over several lines.
    """
    logging.config.dictConfig(logging_config(settings))
    log_uncaught_exceptions()


def ensure_logging(settings: LoggingSettings) -> None:
    """Configure logging unless the process already has (gunicorn has, before it loads the app).

    Also leaves pytest's capture of logs alone when a test imports the app's module. Warnings and
    uncaught exceptions are logged either way.
    """
    if logging.getLogger().handlers:
        log_uncaught_exceptions()
    else:
        configure_logging(settings)


def log_uncaught_exceptions() -> None:
    """Log warnings, and exceptions that end a thread or the program, instead of printing them."""
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], error: BaseException, traceback: TracebackType | None) -> None:
    logging.getLogger("uncaught").critical(
        "uncaught %s: %s", kind.__name__, error, exc_info=(kind, error, traceback)
    )


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return  # as the default hook: a thread that calls sys.exit() just ends
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("uncaught").critical(
        "uncaught %s in thread %s: %s",
        args.exc_type.__name__,
        name,
        args.exc_value,
        exc_info=(args.exc_type, args.exc_value or args.exc_type(), args.exc_traceback),
    )
