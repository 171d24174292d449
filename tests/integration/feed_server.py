"""A real WebSocket execution feed for tests, speaking the contract with a real feed's faults.

It serves ``/executions?from=<feed_seq>``: every report with a greater ``feed_seq``, as JSON
arrays, in frames. On request it repeats reports, shuffles them within a window of frames, skips
one now and then (a gap the client must notice and reconnect over) and drops the connection
after some frames. A seeded random generator makes a failing run repeatable.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed


def make_reports(orders: int, *, seed: int = 1) -> list[dict[str, Any]]:
    """Reports of ``orders`` orders, interleaved, numbered by ``feed_seq`` in the order they are made.

    Each order is accepted, then filled in one to three fills, or rejected; its reports' ``seq``
    increases with their ``feed_seq``, as a real feed's would.
    """
    rng = random.Random(seed)
    stories: list[list[dict[str, Any]]] = []
    for _ in range(orders):
        order_id = str(uuid.uuid4())
        if rng.random() < 0.1:
            kinds = [("rejected", 0)]
        else:
            fills = rng.randint(1, 3)
            kinds = [("accepted", 0), *[("partial_fill", 10)] * (fills - 1), ("fill", 10)]
        stories.append(
            [
                {
                    "exec_id": f"{order_id}-{seq}",
                    "order_id": order_id,
                    "seq": seq,
                    "kind": kind,
                    "quantity": quantity,
                    "price": str(Decimal("150.2500")) if quantity else None,
                    "ts": "2026-12-02T11:00:00.123456+00:00",
                }
                for seq, (kind, quantity) in enumerate(kinds, start=1)
            ]
        )
    reports: list[dict[str, Any]] = []
    while stories:
        story = stories[rng.randrange(len(stories))]
        reports.append({"feed_seq": len(reports) + 1, **story.pop(0)})
        if not story:
            stories.remove(story)
    return reports


@dataclass
class Faults:
    """How badly the feed behaves; all off by default (a fast, clean feed)."""

    frame_size: int = 500
    #: Chance that a report is sent a second time, a little later.
    repeat: float = 0.0
    #: Frames within which reports are shuffled.
    shuffle_window: int = 1
    #: Chance that a report is left out of this connection (the next connection resends it).
    skip: float = 0.0
    #: Frames after which the connection is dropped; 0 for never.
    drop_after_frames: int = 0
    #: Seconds between frames: a feed slow enough to be interrupted mid-stream.
    pause_s: float = 0.0


class FeedServer:
    """The feed on 127.0.0.1, on a free port, in a thread of its own; use as a context manager."""

    def __init__(self, reports: list[dict[str, Any]], faults: Faults | None = None, *, seed: int = 2) -> None:
        self.reports = reports
        self.faults = faults or Faults()
        self.connections = 0
        self._rng = random.Random(seed)
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-feed", daemon=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://127.0.0.1:{port}/executions"

    def __enter__(self) -> FeedServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=5)
        return self

    def __exit__(self, *_exc: object) -> None:
        server = self._server
        if server is not None:
            server.close()
            asyncio.run_coroutine_threadsafe(server.wait_closed(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    async def _start(self) -> Server:
        return await serve(self._handle, "127.0.0.1", 0, compression=None)

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        with suppress(ConnectionClosed):
            await self._serve(connection)

    async def _serve(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        query = parse_qs(urlsplit(connection.request.path).query)
        after = int(query.get("from", ["0"])[0])
        for frames, frame in enumerate(self._frames(self.reports[after:]), start=1):
            await connection.send(json.dumps(frame))
            if self.faults.pause_s:
                await asyncio.sleep(self.faults.pause_s)
            if self.faults.drop_after_frames and frames >= self.faults.drop_after_frames:
                return
        await connection.wait_closed()

    def _frames(self, reports: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        faults = self.faults
        window = faults.frame_size * faults.shuffle_window
        for start in range(0, len(reports), window):
            chunk = [
                report for report in reports[start : start + window] if self._rng.random() >= faults.skip
            ]
            chunk += [report for report in chunk if self._rng.random() < faults.repeat]
            if faults.shuffle_window > 1:
                self._rng.shuffle(chunk)
            for offset in range(0, len(chunk), faults.frame_size):
                yield chunk[offset : offset + faults.frame_size]
