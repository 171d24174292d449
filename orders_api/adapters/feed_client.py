"""The exchange's execution feed over WebSocket: the resume URL and the reports of one frame.

The feed sends each text frame as a JSON array of report objects. Each report is kept as the
decoded object the ingestor publishes (re-encoded once per partition message, not per report)
with the three fields the ingestor routes and orders it by. The connection itself is the
``websockets`` package's asyncio client, opened by :func:`connect_feed` with the options that
suit a high-volume local feed.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect

#: Largest frame accepted, in bytes: a frame is a batch of reports, so well above one report.
MAX_FRAME_BYTES = 16 * 1024 * 1024


class MalformedReportError(ValueError):
    """A frame or a report in it does not follow the feed's contract."""


@dataclass(frozen=True)
class FeedReport:
    """One execution report: where it sits in the feed, whose it is, and the object to publish."""

    feed_seq: int
    exec_id: str
    order_id: uuid.UUID
    fields: dict[str, Any]


def resume_url(feed_url: str, last_feed_seq: int) -> str:
    """``feed_url`` with ``from=<last_feed_seq>``: the feed sends every report after it."""
    parts = urlsplit(feed_url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "from"]
    query.append(("from", str(last_feed_seq)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def parse_frame(frame: str | bytes) -> list[FeedReport]:
    """The reports of one frame, in the frame's order.

    :raises MalformedReportError: the frame is not a JSON array of reports with the routing fields.
    """
    try:
        items = json.loads(frame)
    except ValueError as error:
        raise MalformedReportError(f"frame is not JSON: {error}") from error
    if not isinstance(items, list):
        raise MalformedReportError("frame is not a JSON array")
    return [_report(item) for item in items]


def _report(item: object) -> FeedReport:
    if not isinstance(item, dict):
        raise MalformedReportError("report is not a JSON object")
    try:
        feed_seq = item["feed_seq"]
        exec_id = item["exec_id"]
        order_id = uuid.UUID(item["order_id"])
    except (KeyError, TypeError, ValueError) as error:
        raise MalformedReportError(
            f"report lacks a valid feed_seq, exec_id or order_id: {error!r}"
        ) from error
    if not isinstance(feed_seq, int) or isinstance(feed_seq, bool) or feed_seq < 1:
        raise MalformedReportError(f"feed_seq {feed_seq!r} is not a positive integer")
    if not isinstance(exec_id, str) or not exec_id:
        raise MalformedReportError("exec_id is not a non-empty string")
    return FeedReport(feed_seq, exec_id, order_id, item)


def connect_feed(url: str, *, open_timeout_s: float) -> connect:
    """An asyncio WebSocket connection to ``url`` (``async with``), opened within ``open_timeout_s``.

    No compression (a local feed's bottleneck is CPU, not bandwidth), no proxy from the
    environment, pings every 10 s so a silent dead peer is noticed within 20 s.
    """
    return connect(
        url,
        open_timeout=open_timeout_s,
        compression=None,
        proxy=None,
        max_size=MAX_FRAME_BYTES,
        ping_interval=10,
        ping_timeout=10,
        close_timeout=2,
    )


__all__ = [
    "ClientConnection",
    "FeedReport",
    "MalformedReportError",
    "connect_feed",
    "parse_frame",
    "resume_url",
]
