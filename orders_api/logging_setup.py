"""Logging for every process of the service: one JSON object per line, with the request id.

Each process kind configures logging at one place, from :func:`logging_config`: gunicorn through
``logconfig_dict`` (:mod:`orders_api.entrypoints.gunicorn_config`, which also turns its access log
into JSON lines), the Dramatiq CLI's main process in :mod:`workers.dramatiq_cli` and each worker
process in :mod:`workers.main`, and the operator commands in :mod:`orders_api.wsgi` and
:func:`orders_api.adapters.schema.upgrade_from_environment`. The rest of the code uses plain
``logging.getLogger(__name__)`` loggers and knows nothing of the format.

A line holds ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``process``,
``thread``, ``request_id`` when one is bound (:mod:`orders_api.request_ids`), any ``extra``
fields, and ``exception``, the traceback as one string, so that a line is still one event.
``LOG_FORMAT=text`` gives plain lines for a human at a terminal; ``LOG_LEVEL`` sets the level.

The formatter is python-json-logger's: a :class:`logging.Formatter` like any other, so it plugs
into the standard library's ``dictConfig``, which gunicorn and Dramatiq already drive.
"""

from __future__ import annotations

import logging
import logging.config
import os
import sys
import threading
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from pythonjsonlogger.core import LogData
from pythonjsonlogger.json import JsonFormatter

from orders_api import request_ids

#: ``json`` (the default, for log collectors) or ``text`` (for a human at a terminal).
LOG_FORMAT_ENV = "LOG_FORMAT"
#: The root level, by name (``DEBUG``, ``INFO``, ...).
LOG_LEVEL_ENV = "LOG_LEVEL"
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
#: gunicorn's access line as a human reads it; the same facts are also separate fields
#: (:class:`AccessLogFields`).
ACCESS_LOG_FORMAT = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms'
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


class AccessLogFields(logging.Filter):
    """Turns gunicorn's access record into fields: method, path, status, duration, request id, remote.

    gunicorn logs each response as ``access_log.info(access_log_format, atoms)``, so the record's
    ``args`` are its atoms (``m`` method, ``U`` path, ``s`` status, ``D`` microseconds, ``h``
    remote address, ``{name}o`` response headers). The request id is read from the response's
    ``X-Request-ID`` header: by the time gunicorn logs, the request's context is gone.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Always let the record through; only annotate it."""
        atoms = record.args
        if not isinstance(atoms, Mapping):
            return True
        record.method = atoms.get("m")
        record.path = atoms.get("U")
        record.query = atoms.get("q") or None
        record.status = _int_or_none(atoms.get("s"))
        micros = atoms.get("D")
        record.duration_ms = round(micros / 1000, 3) if isinstance(micros, int) else None
        record.response_bytes = atoms.get("B")
        record.remote = atoms.get("h")
        record.user_agent = atoms.get("a")
        record.request_id = atoms.get("{%s}o" % request_ids.HEADER.lower())  # noqa: UP031 -- gunicorn's atom syntax
        return True


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def logging_config(environ: Mapping[str, str] | None = None, *, gunicorn: bool = False) -> dict[str, Any]:
    """The ``dictConfig`` of a process: the root logger, and gunicorn's own two loggers with ``gunicorn``.

    gunicorn keeps its error and access loggers apart from the root (``propagate`` off); they get
    the same stream and format, and the access logger its fields (:class:`AccessLogFields`).
    """
    env = os.environ if environ is None else environ
    text = env.get(LOG_FORMAT_ENV, "json").strip().lower() == "text"
    level = env.get(LOG_LEVEL_ENV, "INFO").strip().upper()
    formatter = {"()": f"{__name__}.{'text_formatter' if text else 'json_formatter'}"}
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": formatter},
        "filters": {
            "request_id": {"()": f"{__name__}.RequestIdFilter"},
            "access": {"()": f"{__name__}.AccessLogFields"},
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
            "filters": ["access"],
        }
        config["loggers"] = {
            "gunicorn.error": {"level": level, "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        }
    return config


def configure_logging(environ: Mapping[str, str] | None = None) -> None:
    """Configure this process's logging (replacing any earlier configuration of the root logger).

    Python's warnings and uncaught exceptions are logged too, so that they also come out as JSON
    lines rather than as bare tracebacks over several lines.
    """
    logging.config.dictConfig(logging_config(environ))
    log_uncaught_exceptions()


def ensure_logging(environ: Mapping[str, str] | None = None) -> None:
    """Configure logging unless the process already has (gunicorn has, before it loads the app).

    Also leaves pytest's capture of logs alone when a test imports the app's module. Warnings and
    uncaught exceptions are logged either way.
    """
    if logging.getLogger().handlers:
        log_uncaught_exceptions()
    else:
        configure_logging(environ)


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
