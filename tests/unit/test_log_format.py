"""Log lines: one JSON object per line, with the request id, and gunicorn's access line as fields."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from gunicorn.config import Config

from orders_api import request_ids
from orders_api.api.access_log import AccessLogger
from orders_api.logging_setup import (
    RequestIdFilter,
    _log_uncaught_in_thread,
    json_formatter,
    text_formatter,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def lines() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own, writing through the service's formatter and filter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger(f"tests.log_format.{id(stream)}")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_line_holds_utc_time_level_logger_message_and_process(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines

    logger.info("order %s placed", "o-1", extra={"attempt": 2})

    [line] = parsed(stream)
    assert list(line)[:6] == ["timestamp", "level", "logger", "message", "process", "thread"]
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == timedelta(0)
    assert (line["level"], line["logger"], line["message"]) == ("INFO", logger.name, "order o-1 placed")
    assert isinstance(line["process"], int)
    assert line["attempt"] == 2
    assert "request_id" not in line


def test_a_line_carries_the_bound_request_id(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = lines

    with request_ids.bind("req-42"):
        logger.warning("inside")
    logger.warning("outside")

    assert [line.get("request_id") for line in parsed(stream)] == ["req-42", None]


def test_an_exception_is_a_field_and_the_event_stays_one_line(
    lines: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = lines

    try:
        raise ValueError("first line\nsecond line")
    except ValueError:
        logger.exception("it failed")

    [line] = parsed(stream)
    assert line["message"] == "it failed"
    assert line["exception"].startswith("Traceback (most recent call last):")
    assert line["exception"].endswith("ValueError: first line\nsecond line")


def test_gunicorns_access_line_carries_its_facts_as_fields() -> None:
    stream = io.StringIO()
    access = AccessLogger(Config())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    access.access_log.handlers = [handler]
    access.access_log.setLevel(logging.INFO)
    response = SimpleNamespace(status="201 CREATED", sent=312, headers=[("X-Request-ID", "req-7")])
    environ = {
        "REMOTE_ADDR": "10.0.0.7",
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/orders",
        "PATH_INFO": "/orders",
        "QUERY_STRING": "",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_USER_AGENT": "curl/8",
    }

    access.access(response, None, environ, timedelta(microseconds=12345))
    line = json.loads(stream.getvalue())

    assert line["message"] == '10.0.0.7 "POST /orders HTTP/1.1" 201 312 12ms'
    assert {
        key: line.get(key)
        for key in ("method", "path", "status", "duration_ms", "response_bytes", "remote", "request_id")
    } == {
        "method": "POST",
        "path": "/orders",
        "status": 201,
        "duration_ms": 12.345,
        "response_bytes": 312,
        "remote": "10.0.0.7",
        "request_id": "req-7",
    }
    assert line["query"] is None
    assert line["user_agent"] == "curl/8"


def test_text_lines_for_humans_show_the_request_id_or_a_dash() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    assert RequestIdFilter().filter(record)

    assert text_formatter().format(record).endswith("x: hello [-]")


def test_an_exception_that_ends_a_thread_is_logged_as_one_json_line(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(json_formatter())
    uncaught = logging.getLogger("uncaught")
    uncaught.addHandler(handler)
    monkeypatch.setattr(uncaught, "propagate", False)
    monkeypatch.setattr(threading, "excepthook", _log_uncaught_in_thread)

    def fail() -> None:
        raise RuntimeError("lost\nits way")

    try:
        thread = threading.Thread(target=fail, name="doomed")
        thread.start()
        thread.join()
    finally:
        uncaught.removeHandler(handler)

    [line] = parsed(stream)
    assert (line["level"], line["message"]) == (
        "CRITICAL",
        "uncaught RuntimeError in thread doomed: lost\nits way",
    )
    assert line["exception"].endswith("RuntimeError: lost\nits way")
