"""The workers' boot check: consume only once the placement queues are under their policies.

Dead-lettering comes from the queues' policies (:mod:`orders_api.adapters.rabbitmq.queue_topology`).
Dramatiq rejects a message it gives up on without requeueing it, so a worker consuming from a
queue without its policy would drop such messages instead of dead-lettering them. Each worker
process therefore checks the policies before its consumers start, puts those missing, and
refuses to start when it cannot (management API down, a legacy queue, a policy an operator
broke): the process exits, and the supervisor or the kubelet starts it again later.
"""

from __future__ import annotations

import logging

import dramatiq
from dramatiq.errors import BrokerConnectionError
from dramatiq.middleware import MiddlewareError

from orders_api.adapters.rabbitmq.queue_topology import TopologyError, ensure_policies
from orders_api.settings.shared import Settings

logger = logging.getLogger(__name__)


class QueuesNotReadyError(MiddlewareError, BrokerConnectionError):
    """The placement queues lack what dead-lettering needs: the worker must not consume.

    A :class:`~dramatiq.middleware.MiddlewareError`, so that Dramatiq lets it out of the boot
    (it logs and swallows other errors of middleware), and a broker connection error, so that
    the CLI exits with its "broker connection failed" status (3).
    """


class QueuePolicies(dramatiq.Middleware):
    """Checks, once per worker process and before any consumer starts, the placement queues' policies."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Put the missing policies, or keep the worker from booting when the queues are unsafe to consume."""
        try:
            created = ensure_policies(self._settings)
        except TopologyError as error:
            logger.critical("not consuming from %s: %s", self._settings.placement_queue, error)
            raise QueuesNotReadyError(str(error)) from error  # type: ignore[no-untyped-call]
        if created:
            logger.warning("put the missing policies %s", ", ".join(created))
