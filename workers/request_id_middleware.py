"""The request id of the message being processed, bound for the worker's log lines about its order.

The API puts the id of the request that asked for an order into its placement message's options
(:data:`orders_api.adapters.rabbitmq.placement_queue.REQUEST_ID_OPTION`); this middleware binds it while
the message is processed, so the worker's lines about the order carry the same ``request_id`` as
the API's. Each worker thread (greenlet under gevent) has its own current id, and processes one
message at a time, so the id is set before a message and cleared after it. Messages republished
by the reconciliation sweep or replayed from the dead letters carry none.
"""

from __future__ import annotations

import dramatiq

from orders_api import request_ids
from orders_api.adapters.rabbitmq.placement_queue import REQUEST_ID_OPTION


class RequestIds(dramatiq.Middleware):
    """Binds each message's request id while it is processed; first in the chain, so it spans the others."""

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        """Bind the message's id, if it carries a sane one (it came over the wire: check it again)."""
        request_id = message.options.get(REQUEST_ID_OPTION)
        request_ids.set_current(request_id if request_ids.is_sane(request_id) else None)

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: object | None = None,
        exception: BaseException | None = None,
    ) -> None:
        """Clear it: the thread's next message may come from another request."""
        request_ids.set_current(None)

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        """Clear it for a skipped message too (no ``after_process_message`` follows a skip)."""
        request_ids.set_current(None)
