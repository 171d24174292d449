"""``orders-exchange-feed``: run the execution feed simulator in the foreground.

Every flag has an environment variable (``FEED_*``, and ``DATABASE_URL`` for the orders), so
that ``make run`` and Kubernetes configure it as they configure the rest of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from orders_api.config import DEFAULT_DATABASE_URL
from orders_api.exchange_feed.durable_log import DurableLog
from orders_api.exchange_feed.faults import FaultSettings
from orders_api.exchange_feed.placed_orders import PlacedOrders
from orders_api.exchange_feed.producer import Producer, ProducerSettings
from orders_api.exchange_feed.server import FeedServer, ServerSettings, Tail
from orders_api.logging_setup import configure_logging

log = logging.getLogger(__name__)

#: The feed's faults unless told otherwise: rare enough to watch, frequent enough to matter.
DEFAULT_REPEAT_PROBABILITY = 0.01
DEFAULT_REORDER_PROBABILITY = 0.01
DEFAULT_DROP_EVERY_FRAMES = 1000


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """The command line over the environment over the defaults."""
    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="orders-exchange-feed",
        description="Simulated exchange feed: execution reports of the placed orders, over WebSocket.",
    )
    parser.add_argument("--host", default=env.get("FEED_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env.get("FEED_PORT", "8765")))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(env.get("FEED_STATE_DIR", os.path.join(tempfile.gettempdir(), "orders-exchange-feed"))),
        help="where the durable log lives (FEED_STATE_DIR)",
    )
    parser.add_argument("--database-url", default=env.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    parser.add_argument("--seed", type=int, default=int(env.get("FEED_SEED", "0")))
    parser.add_argument(
        "--rate",
        type=float,
        default=float(env.get("FEED_RATE", "1000")),
        help="reports logged per second at most; 0: as fast as possible (FEED_RATE)",
    )
    parser.add_argument(
        "--batch", type=int, default=int(env.get("FEED_BATCH", "1")), help="reports per frame (FEED_BATCH)"
    )
    fills = env.get("FEED_FILLS_PER_ORDER", "")  # unset: stories of random shapes
    parser.add_argument(
        "--fills-per-order",
        type=int,
        default=int(fills) if fills else None,
        help="bench mode: every order accepted then filled in exactly this many fills (FEED_FILLS_PER_ORDER)",
    )
    parser.add_argument("--poll-interval", type=float, default=float(env.get("FEED_POLL_INTERVAL_S", "0.1")))
    parser.add_argument("--poll-limit", type=int, default=int(env.get("FEED_POLL_LIMIT", "1000")))
    parser.add_argument(
        "--late-commit-window",
        type=float,
        default=float(env.get("FEED_LATE_COMMIT_WINDOW_S", "10")),
        help="seconds behind the poll's cursor swept for orders committed late; 0: no sweep",
    )
    parser.add_argument(
        "--repeat-probability",
        type=float,
        default=float(env.get("FEED_REPEAT_PROBABILITY", DEFAULT_REPEAT_PROBABILITY)),
    )
    parser.add_argument(
        "--reorder-probability",
        type=float,
        default=float(env.get("FEED_REORDER_PROBABILITY", DEFAULT_REORDER_PROBABILITY)),
    )
    parser.add_argument(
        "--drop-every",
        type=int,
        default=int(env.get("FEED_DROP_EVERY_FRAMES", DEFAULT_DROP_EVERY_FRAMES)),
        help="frames a connection lives on average before it is cut without a close frame; 0: never",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        default=env.get("FEED_CLEAN", "0") == "1",
        help="no repeats, no reordering, no dropped connections (FEED_CLEAN=1)",
    )
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    if args.fills_per_order is not None and args.fills_per_order < 1:
        parser.error("--fills-per-order must be at least 1")
    return args


def fault_settings(args: argparse.Namespace) -> FaultSettings:
    """The faults the arguments ask for; none with ``--clean``."""
    if args.clean:
        return FaultSettings()
    return FaultSettings(
        repeat_probability=args.repeat_probability,
        reorder_probability=args.reorder_probability,
        drop_every_frames=args.drop_every,
    )


async def run(args: argparse.Namespace) -> None:
    """Serve the feed and produce its reports until SIGTERM or SIGINT."""
    feed_log = DurableLog(args.state_dir)
    placed_orders = PlacedOrders(args.database_url)
    tail = Tail()
    producer = Producer(
        feed_log,
        placed_orders,
        ProducerSettings(
            seed=args.seed,
            rate=args.rate,
            fills_per_order=args.fills_per_order,
            poll_interval_s=args.poll_interval,
            poll_limit=args.poll_limit,
            late_commit_window_s=args.late_commit_window,
        ),
        tail.notify,
    )
    server = await FeedServer(
        feed_log,
        tail,
        ServerSettings(host=args.host, port=args.port, batch=args.batch, seed=args.seed),
        fault_settings(args),
    ).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info(
        "exchange feed on ws://%s:%d/executions, log %s at feed_seq %d",
        args.host,
        args.port,
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
        placed_orders.close()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``orders-exchange-feed``; logs JSON lines like every process of the service."""
    configure_logging()
    # websockets logs every connection and every health probe at INFO: noise at a probe's pace.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(run(parse_args(argv)))
