"""``orders-broker-setup``: put the placement queues' policies and declare the queues, idempotently.

Run before the service starts (``make migrate``, a Kubernetes Job or init container), and again
whenever ``PLACEMENT_DELIVERY_LIMIT`` or ``DEAD_LETTER_TTL_MS`` changes: the new values reach the
existing queues, and the messages in them, without deleting anything. It reads the same
environment as the service (``RABBITMQ_URL``, ``RABBITMQ_MANAGEMENT_URL``, ``PLACEMENT_QUEUE``)
and exits with status 1 and one line saying what to do when it cannot finish.
"""

from __future__ import annotations

import logging
import sys

from orders_api.adapters.rabbitmq.queue_topology import TopologyError, set_up_placement_queues
from orders_api.logging_setup import configure_logging
from orders_api.settings.base import load
from orders_api.settings.shared import Settings

logger = logging.getLogger(__name__)


def main() -> None:
    """Console entry point: set up the queues named by the environment, or exit 1 saying why not."""
    settings = load(Settings)
    configure_logging(settings)
    logging.getLogger("pika").setLevel(logging.WARNING)
    try:
        report = set_up_placement_queues(settings)
    except TopologyError as error:
        logger.error("broker setup failed: %s", error)
        sys.exit(1)
    logger.info(
        "placement queues %s ready (delivery limit %d, dead letters kept %d ms); policies put: %s; "
        "legacy queues recreated: %s",
        settings.placement_queue,
        settings.placement_delivery_limit,
        settings.dead_letter_ttl_ms,
        ", ".join(report.policies_put) or "none",
        ", ".join(report.queues_recreated) or "none",
    )
