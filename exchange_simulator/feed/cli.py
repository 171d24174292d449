"""``orders-exchange-feed``: run the execution feed simulator in the foreground.

Every flag has an environment variable (``FEED_*``, and ``DATABASE_URL`` for the orders,
:class:`~orders_api.settings.feed.FeedSettings`), so that ``make run`` and Kubernetes configure
it as they configure the rest of the service. A flag given wins over its variable; both are
validated together, and a bad value of either stops the start with one line naming the variable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Sequence
from contextlib import suppress

import psycopg2

from exchange_simulator.feed.durable_log import DurableLog, database_folder
from exchange_simulator.feed.faults import FaultSettings
from exchange_simulator.feed.placed_orders import PlacedOrders
from exchange_simulator.feed.producer import Producer, ProducerSettings
from exchange_simulator.feed.server import FeedServer, ServerSettings, Tail
from orders_api.logging_setup import configure_logging
from orders_api.settings.base import load
from orders_api.settings.feed import FeedSettings

log = logging.getLogger(__name__)


def parse_args(argv: Sequence[str] | None = None) -> FeedSettings:
    """The command line over the environment over the defaults."""
    parser = argparse.ArgumentParser(
        prog="orders-exchange-feed",
        description="Simulated exchange feed: execution reports of the placed orders, over WebSocket.",
        # A flag left out leaves its variable (or its default) in charge.
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("--host", dest="feed_host", help="(FEED_HOST)")
    parser.add_argument("--port", dest="feed_port", help="(FEED_PORT)")
    parser.add_argument(
        "--state-dir",
        dest="feed_state_dir",
        help="where the durable logs live, one folder per orders database (FEED_STATE_DIR)",
    )
    parser.add_argument("--database-url", dest="database_url", help="(DATABASE_URL)")
    parser.add_argument("--seed", dest="feed_seed", help="(FEED_SEED)")
    parser.add_argument(
        "--rate",
        dest="feed_rate",
        help="reports logged per second at most; 0: as fast as possible (FEED_RATE)",
    )
    parser.add_argument("--batch", dest="feed_batch", help="reports per frame (FEED_BATCH)")
    parser.add_argument(
        "--fills-per-order",
        dest="feed_fills_per_order",
        help="bench mode: every order accepted then filled in exactly this many fills (FEED_FILLS_PER_ORDER)",
    )
    parser.add_argument("--poll-interval", dest="feed_poll_interval_s", help="(FEED_POLL_INTERVAL_S)")
    parser.add_argument("--poll-limit", dest="feed_poll_limit", help="(FEED_POLL_LIMIT)")
    parser.add_argument(
        "--late-commit-window",
        dest="feed_late_commit_window_s",
        help="seconds behind the poll's cursor swept for orders committed late; 0: no sweep "
        "(FEED_LATE_COMMIT_WINDOW_S)",
    )
    parser.add_argument(
        "--repeat-probability", dest="feed_repeat_probability", help="(FEED_REPEAT_PROBABILITY)"
    )
    parser.add_argument(
        "--reorder-probability", dest="feed_reorder_probability", help="(FEED_REORDER_PROBABILITY)"
    )
    parser.add_argument(
        "--drop-every",
        dest="feed_drop_every_frames",
        help="frames a connection lives on average before it is cut without a close frame; 0: never "
        "(FEED_DROP_EVERY_FRAMES)",
    )
    parser.add_argument(
        "--clean",
        dest="feed_clean",
        action="store_true",
        help="no repeats, no reordering, no dropped connections (FEED_CLEAN=1)",
    )
    return load(FeedSettings, **vars(parser.parse_args(argv)))


def fault_settings(settings: FeedSettings) -> FaultSettings:
    """The faults the settings ask for; none with ``FEED_CLEAN``."""
    if settings.feed_clean:
        return FaultSettings()
    return FaultSettings(
        repeat_probability=settings.feed_repeat_probability,
        reorder_probability=settings.feed_reorder_probability,
        drop_every_frames=settings.feed_drop_every_frames,
    )


#: Seconds between two tries to learn which database the orders are in, while it does not answer.
DATABASE_RETRY_S = 1.0


async def run(settings: FeedSettings) -> None:
    """Serve the feed and produce its reports until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    placed_orders = PlacedOrders(settings.database_url)
    try:
        database = await _database_of(placed_orders, stop)
        if database is not None:
            await _serve(settings, placed_orders, database, stop)
    finally:
        placed_orders.close()


async def _database_of(placed_orders: PlacedOrders, stop: asyncio.Event) -> tuple[str, int] | None:
    """The orders' database (name, oid), asked until it answers; ``None`` if stopped first."""
    while not stop.is_set():
        try:
            return await asyncio.to_thread(placed_orders.database)
        except psycopg2.Error as error:
            log.warning("the orders' database does not answer yet: %s", str(error).strip())
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DATABASE_RETRY_S)
    return None


async def _serve(
    settings: FeedSettings, placed_orders: PlacedOrders, database: tuple[str, int], stop: asyncio.Event
) -> None:
    feed_log = DurableLog(database_folder(settings.feed_state_dir, *database))
    tail = Tail()
    producer = Producer(
        feed_log,
        placed_orders,
        ProducerSettings(
            seed=settings.feed_seed,
            rate=settings.feed_rate,
            fills_per_order=settings.feed_fills_per_order,
            poll_interval_s=settings.feed_poll_interval_s,
            poll_limit=settings.feed_poll_limit,
            late_commit_window_s=settings.feed_late_commit_window_s,
        ),
        tail.notify,
    )
    server = await FeedServer(
        feed_log,
        tail,
        ServerSettings(
            host=settings.feed_host,
            port=settings.feed_port,
            batch=settings.feed_batch,
            seed=settings.feed_seed,
        ),
        fault_settings(settings),
    ).start()
    log.info(
        "exchange feed on ws://%s:%d/executions, log %s at feed_seq %d",
        settings.feed_host,
        settings.feed_port,
        feed_log.path,
        feed_log.last_feed_seq,
    )
    producing = asyncio.create_task(producer.run())
    try:
        await stop.wait()
    finally:
        producing.cancel()
        server.close()
        await server.wait_closed()
        await asyncio.gather(producing, return_exceptions=True)
        feed_log.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``orders-exchange-feed``; logs JSON lines like every process of the service."""
    settings = parse_args(argv)
    configure_logging(settings)
    # websockets logs every connection and every health probe at INFO: noise at a probe's pace.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(run(settings))
