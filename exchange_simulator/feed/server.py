"""The feed's WebSocket server: ``/executions?from=N`` streams every report after N; ``/healthz``.

Each connection starts at the client's ``from`` (0 when absent) and reads the log's index from
there: first the backlog, as fast as the client takes it (the websockets send buffer gives the
backpressure), then new reports as the producer logs them. A text frame is a JSON array of up to
``batch`` reports. The connection's :class:`~.faults.ConnectionFaults` repeat, reorder and drop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from exchange_simulator.feed.durable_log import DurableLog
from exchange_simulator.feed.faults import ConnectionFaults, FaultSettings

log = logging.getLogger(__name__)

#: The feed's path.
FEED_PATH = "/executions"
#: The liveness probe's path.
HEALTH_PATH = "/healthz"
#: Most reports read from the log at a time for one connection.
CHUNK_REPORTS = 4096


@dataclass(frozen=True)
class ServerSettings:
    """Where the feed listens and how it frames reports."""

    host: str = "127.0.0.1"
    port: int = 8765
    #: Reports per text frame, at most.
    batch: int = 1
    #: Seeds the connections' faults (each connection draws from its own stream).
    seed: int = 0


class Tail:
    """Wakes the connections waiting for reports beyond the end of the log."""

    def __init__(self) -> None:
        self._logged = asyncio.Event()

    def notify(self) -> None:
        """New reports are in the log: wake every waiter."""
        self._logged.set()
        self._logged = asyncio.Event()

    async def wait(self) -> None:
        """Until the next :meth:`notify`."""
        await self._logged.wait()


def resume_point(path: str) -> int | None:
    """The ``from`` of a feed request's path (0 when absent); ``None`` when it is not a position."""
    values = parse_qs(urlsplit(path).query).get("from", ["0"])
    try:
        position = int(values[-1])
    except ValueError:
        return None
    return position if position >= 0 else None


class FeedServer:
    """Serves the log to WebSocket clients."""

    def __init__(
        self, feed_log: DurableLog, tail: Tail, settings: ServerSettings, faults: FaultSettings
    ) -> None:
        self._log = feed_log
        self._tail = tail
        self._settings = settings
        self._faults = faults
        self._connections = itertools.count()

    async def start(self) -> Server:
        """Listen; the caller serves forever or closes the returned server."""
        return await serve(
            self._stream,
            self._settings.host,
            self._settings.port,
            process_request=self._route,
            compression=None,
        )

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP (health, unknown paths, bad positions); let feed requests upgrade."""
        path = urlsplit(request.path).path
        if path == HEALTH_PATH:
            return connection.respond(HTTPStatus.OK, "ok\n")
        if path != FEED_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, f"no such path; the feed is {FEED_PATH}\n")
        if resume_point(request.path) is None:
            return connection.respond(HTTPStatus.BAD_REQUEST, "from must be a feed_seq (an integer >= 0)\n")
        return None

    async def _stream(self, connection: ServerConnection) -> None:
        """Send every report after the client's position, until it goes away or is dropped."""
        assert connection.request is not None
        position = resume_point(connection.request.path) or 0
        rng = random.Random(f"{self._settings.seed}:connection:{next(self._connections)}")
        faults = ConnectionFaults(self._faults, rng)
        frames_left = faults.frames_before_drop()
        batch = self._settings.batch
        closed = asyncio.ensure_future(connection.wait_closed())
        try:
            while True:
                while self._log.last_feed_seq <= position:
                    # Wait for the client's going too, or an idle handler outlives its connection
                    # (and holds up the server's shutdown, which waits for every handler).
                    logged = asyncio.ensure_future(self._tail.wait())
                    await asyncio.wait((logged, closed), return_when=asyncio.FIRST_COMPLETED)
                    if closed.done():
                        logged.cancel()
                        return
                end = min(self._log.last_feed_seq, position + CHUNK_REPORTS)
                chunk = self._log.reports[position:end]
                position = end
                reports = faults.disorder(chunk, more_coming=self._log.last_feed_seq > position)
                for start in range(0, len(reports), batch):
                    await connection.send("[" + ",".join(reports[start : start + batch]) + "]")
                    if frames_left is not None:
                        frames_left -= 1
                        if frames_left == 0:
                            log.info("dropping a feed connection without a close frame, as a real feed may")
                            connection.transport.abort()
                            return
        except ConnectionClosed:
            return
        finally:
            closed.cancel()
