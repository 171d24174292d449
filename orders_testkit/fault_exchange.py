"""The stand-in exchange of the fault suite and the benchmark: recorded, with an outage switch.

The stand-in (``exchange_simulator.stock_exchange.place_order``, unchanged) wrapped twice, so that no
production code knows about faults:

- **The exchange's own record.** When ``FAULTS_PLACEMENTS_FILE`` names a file, every placement
  the exchange accepted is appended to it as one line, ``<order id> <Unix time> <pid>``, and
  synced to disk after the exchange's call returns and before the wrapper does. Log lines can be
  missed (a worker killed before writing one, a line lost in a pipe); this record cannot miss a
  placement that the worker went on to act on, so the suite counts placements and duplicates
  from it. The calls are logged as ``workers.bootstrap.logged_exchange`` logs them (``exchange
  call for order <id>``, ``exchange placed order <id>``), for the checks that read the logs.
- **An exchange outage to switch on.** While the file named by ``FAULTS_EXCHANGE_OUTAGE_MARKER``
  exists, every call fails with ``OrderPlacementError``, as a real exchange's outage would. The
  exchange-outage scenario and ``make bench`` create and delete the file.

Without either variable the wrapper is left out. :mod:`orders_testkit.outage_workers` wires it
into the workers; this module wires nothing, so the suite and the benchmark import its names freely.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path

from exchange_simulator import stock_exchange
from exchange_simulator.stock_exchange import OrderPlacementError
from orders_api.domain import Order
from orders_api.service_layer.placement import Exchange
from workers.bootstrap import logged_exchange

#: Environment variable naming the file whose existence means "the exchange is down".
OUTAGE_MARKER_ENV = "FAULTS_EXCHANGE_OUTAGE_MARKER"
#: Environment variable naming the file in which the exchange records every placement it accepted.
PLACEMENTS_FILE_ENV = "FAULTS_PLACEMENTS_FILE"

logger = logging.getLogger(__name__)


def recorded_exchange(record: Path) -> Exchange:
    """The logged stand-in exchange, appending each placement it accepted to ``record``, synced.

    ``O_APPEND`` makes each line one write at the end of the file, so the processes of a run
    (and of a restarted run) share it without tearing lines; ``fsync`` makes the line outlive a
    SIGKILL that follows the call at once. The order id goes first in the line, the time the
    exchange answered after it.
    """
    descriptor = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def place(order: Order) -> None:
        logger.info("exchange call for order %s", order.id)
        stock_exchange.place_order(order)
        os.write(descriptor, f"{order.id} {time.time():.6f} {os.getpid()}\n".encode("ascii"))
        os.fsync(descriptor)
        logger.info("exchange placed order %s", order.id)

    return place


def exchange_with_outage(marker: Path, exchange: Exchange = logged_exchange) -> Exchange:
    """``exchange``, failing every call while ``marker`` exists."""

    def place(order: Order) -> None:
        if marker.exists():
            # Logged like a real call, so that calls still match the order's attempts.
            logger.info("exchange call for order %s refused: outage", order.id)
            raise OrderPlacementError("exchange outage (fault injection)")
        exchange(order)

    return place


def fault_exchange(environ: Mapping[str, str]) -> Exchange:
    """The exchange the environment asks for: recorded, with an outage switch, or both."""
    record = environ.get(PLACEMENTS_FILE_ENV)
    exchange = recorded_exchange(Path(record)) if record else logged_exchange
    marker = environ.get(OUTAGE_MARKER_ENV)
    return exchange_with_outage(Path(marker), exchange) if marker else exchange
