"""The exchange's execution feed over WebSocket: the resume URL and the reports of one frame.

The feed sends each text frame as a JSON array of report objects. Each report is kept as the
decoded object the ingestor publishes (re-encoded once per partition message, not per report)
with the three fields the ingestor routes and orders it by; a report without them is kept raw,
beside its neighbours, for the ingestor to skip. The connection itself is the
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
#: Most characters of an unreadable report or frame kept for the log: a frame may be 16 MiB.
MAX_RAW_CHARS = 64 * 1024


@dataclass(frozen=True)
class FeedReport:
    """One execution report: where it sits in the feed, whose it is, and the object to publish."""

    feed_seq: int
    exec_id: str
    order_id: uuid.UUID
    fields: dict[str, Any]


@dataclass(frozen=True)
class UnreadableReport:
    """Part of a frame that is not a report the ingestor can route: kept raw, for the log.

    The feed's log is immutable, so what does not parse now never will: the ingestor skips it
    rather than wait for a readable copy. Only the routing fields are judged here (``feed_seq``,
    ``exec_id``, ``order_id``); the rest is the applier's to judge, in one place, which keeps the
    ingestor's per-report cost to what it routes by.
    """

    #: The ``feed_seq`` it names, when at least that can be read; ``None`` when not even that.
    feed_seq: int | None
    #: The report (or the whole frame, when it is not a JSON array) as text, cut at :data:`MAX_RAW_CHARS`.
    raw: str
    error: str


def resume_url(feed_url: str, last_feed_seq: int) -> str:
    """``feed_url`` with ``from=<last_feed_seq>``: the feed sends every report after it."""
    parts = urlsplit(feed_url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "from"]
    query.append(("from", str(last_feed_seq)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def parse_frame(frame: str | bytes) -> list[FeedReport | UnreadableReport]:
    """The reports of one frame, in the frame's order, each read on its own.

    A report that breaks the contract does not take its neighbours with it: it comes back as an
    :class:`UnreadableReport` in its place. A frame that is not a JSON array is one
    :class:`UnreadableReport` without a ``feed_seq``.
    """
    try:
        items = json.loads(frame)
    except ValueError as error:
        return [UnreadableReport(None, _cut(frame), f"frame is not JSON: {error}")]
    if not isinstance(items, list):
        return [UnreadableReport(None, _cut(frame), "frame is not a JSON array")]
    return [_report(item) for item in items]


def _report(item: object) -> FeedReport | UnreadableReport:
    if not isinstance(item, dict):
        return UnreadableReport(None, _cut(json.dumps(item)), "report is not a JSON object")
    feed_seq = item.get("feed_seq")
    if not isinstance(feed_seq, int) or isinstance(feed_seq, bool) or feed_seq < 1:
        return UnreadableReport(
            None, _cut(json.dumps(item)), f"feed_seq {feed_seq!r} is not a positive integer"
        )
    exec_id = item.get("exec_id")
    if not isinstance(exec_id, str) or not exec_id:
        return UnreadableReport(feed_seq, _cut(json.dumps(item)), "exec_id is not a non-empty string")
    try:
        order_id = uuid.UUID(item["order_id"])
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        return UnreadableReport(feed_seq, _cut(json.dumps(item)), f"order_id is not a UUID: {error!r}")
    return FeedReport(feed_seq, exec_id, order_id, item)


def _cut(raw: str | bytes) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if len(text) <= MAX_RAW_CHARS:
        return text
    return f"{text[:MAX_RAW_CHARS]}... ({len(text)} characters in all)"


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
    "UnreadableReport",
    "connect_feed",
    "parse_frame",
    "resume_url",
]
