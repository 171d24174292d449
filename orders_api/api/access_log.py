"""gunicorn's access log line, built from the few facts it carries rather than from every atom.

gunicorn's own ``Logger.access`` builds a dictionary of every atom its format could name (each
request header, each response header, each WSGI environ entry, a formatted local time) for every
response, then formats a line from three of them: about an eighth of the API's CPU per order
(docs/benchmarks.md). :class:`AccessLogger` logs the same line and the same fields (method, path,
query, status, duration, bytes, remote address, user agent, request id) from the response and the
WSGI environ directly.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

from orders_api import request_ids

_REQUEST_ID_HEADER = request_ids.HEADER.lower()


class AccessLogger(Logger):  # type: ignore[misc]  # untyped upstream
    """gunicorn's logger with a cheaper access line (``logger_class`` in the gunicorn config)."""

    def access(self, resp: Any, req: Any, request_environ: dict[str, Any], request_time: timedelta) -> None:  # noqa: ANN401 -- gunicorn's own objects
        """Log ``remote "METHOD URI PROTOCOL" status bytes duration`` with each fact as a field too.

        The request id comes from the response's ``X-Request-ID`` header: by the time gunicorn
        logs, the request's context is gone.
        """
        access_log: logging.Logger = self.access_log
        if not access_log.isEnabledFor(logging.INFO):
            return
        status = _status_code(resp.status)
        duration_ms = request_time.total_seconds() * 1000
        remote = request_environ.get("REMOTE_ADDR", "-")
        method = request_environ.get("REQUEST_METHOD")
        access_log.info(
            '%s "%s %s %s" %s %s %dms',
            remote,
            method,
            request_environ.get("RAW_URI"),
            request_environ.get("SERVER_PROTOCOL"),
            status,
            resp.sent,
            duration_ms,
            extra={
                "method": method,
                "path": request_environ.get("PATH_INFO"),
                "query": request_environ.get("QUERY_STRING") or None,
                "status": status,
                "duration_ms": round(duration_ms, 3),
                "response_bytes": resp.sent,
                "remote": remote,
                "user_agent": request_environ.get("HTTP_USER_AGENT"),
                "request_id": _header(resp.headers, _REQUEST_ID_HEADER),
            },
        )


def _status_code(status: object) -> int | None:
    """``201`` from gunicorn's ``"201 CREATED"`` (or an int), ``None`` if it holds no code."""
    try:
        return int(str(status).split(None, 1)[0])
    except (ValueError, IndexError):
        return None


def _header(headers: list[tuple[str, str]], lowercase_name: str) -> str | None:
    """The value of a response header, by its lower-case name; ``None`` if absent."""
    for name, value in headers:
        if name.lower() == lowercase_name:
            return value
    return None
