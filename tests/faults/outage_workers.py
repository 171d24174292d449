"""Dramatiq entry point with an exchange outage to switch on: ``dramatiq tests.faults.outage_workers``.

The production wiring (``workers.bootstrap.bootstrap``) with one change: while the file named by
``FAULTS_EXCHANGE_OUTAGE_MARKER`` exists, every call to the exchange fails with
``OrderPlacementError``, as a real exchange's outage would; otherwise the call goes to
``workers.bootstrap.logged_exchange``, the stand-in the other scenarios use. The fault suite's
exchange-outage scenario and ``make bench`` create and delete the file to start and end the
outage, so no production code knows about faults. Like ``workers.main``, the wiring runs at
import, once in each worker process.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from orders_api.domain import Order
from orders_api.service_layer.placement import Exchange
from orders_api.stock_exchange import OrderPlacementError
from tests.faults.harness import OUTAGE_MARKER_ENV
from workers.bootstrap import bootstrap, logged_exchange
from workers.settings import WorkerSettings

logger = logging.getLogger(__name__)


def exchange_with_outage(marker: Path) -> Exchange:
    """The logged stand-in exchange, failing every call while ``marker`` exists."""

    def place(order: Order) -> None:
        if marker.exists():
            # Logged like a real call, so that calls still match the order's attempts.
            logger.info("exchange call for order %s refused: outage", order.id)
            raise OrderPlacementError("exchange outage (fault injection)")
        logged_exchange(order)

    return place


broker = bootstrap(
    WorkerSettings.from_env(), exchange=exchange_with_outage(Path(os.environ[OUTAGE_MARKER_ENV]))
)
