"""The placement queue: its topology and the message that asks a worker to place one order.

The API publishes by queue and actor name and never imports the workers; the message format is
Dramatiq's own, so the Dramatiq worker consumes what is published here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name

from orders_api import request_ids
from orders_api.adapters.confirmed_publisher import ConfirmedPublisher, OutgoingMessage, QueueDeclaration

#: Name of the Dramatiq actor that places an order on the exchange.
PLACE_ORDER_ACTOR = "place_order"
#: The message option that carries the id of the request that asked for the placement.
REQUEST_ID_OPTION = "request_id"
#: Redeliveries after which RabbitMQ dead-letters a placement message: the backstop for a
#: message that kills its worker before the order's own poison check can see it. High enough
#: that innocent messages, returned to the queue each time a worker holding them dies, never
#: reach it.
DELIVERY_LIMIT = 20


def queue_declarations(queue_name: str) -> tuple[QueueDeclaration, ...]:
    """The placement queue, its delay queue and its dead-letter queue, for the API and the workers alike.

    All three are quorum queues: replicated in a cluster, measured faster and with a better tail
    than classic queues for confirmed publishes here (docs/queue-types.md), and the only kind
    that counts redeliveries. The placement queue dead-letters a message redelivered more than
    :data:`DELIVERY_LIMIT` times (a message that keeps killing its worker), and dead-letters
    *at least once*: a rejected message is kept until the dead-letter queue has it, which
    RabbitMQ requires to pair with ``reject-publish`` overflow. The names follow Dramatiq's
    (``.DQ``, ``.XQ``) and the workers' broker declares them through this same function, since
    RabbitMQ refuses (406) a declaration whose arguments differ from the existing queue's.
    """
    dead_lettering = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": xq_name(queue_name),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    return (
        QueueDeclaration(queue_name, {**dead_lettering, "x-delivery-limit": DELIVERY_LIMIT}),
        QueueDeclaration(dq_name(queue_name), dead_lettering),
        QueueDeclaration(xq_name(queue_name), {"x-queue-type": "quorum", "x-message-ttl": DEAD_MESSAGE_TTL}),
    )


class PlacementPublisher:
    """Asks the workers to place an order, returning only once RabbitMQ has confirmed the request."""

    def __init__(self, publisher: ConfirmedPublisher, queue_name: str) -> None:
        self._publisher = publisher
        self._queue_name = queue_name

    def request_placement(self, order_id: uuid.UUID) -> None:
        """Publish one persistent ``place_order(order_id)`` message and wait for its confirm.

        :raises PublishError: the broker did not confirm it.
        """
        self.request_placements([order_id])

    def request_placements(self, order_ids: Sequence[uuid.UUID]) -> None:
        """Publish a persistent ``place_order`` message for each order and wait for every confirm.

        :raises PublishError: the broker did not confirm one of them.
        """
        self._publisher.publish_all([self._message(order_id) for order_id in order_ids])

    def _message(self, order_id: uuid.UUID) -> OutgoingMessage:
        # The worker logs the order's lines with the id of the request that asked for it
        # (workers.request_ids); the sweep's and the replays' messages have none.
        request_id = request_ids.for_order(order_id)
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=self._queue_name,
            actor_name=PLACE_ORDER_ACTOR,
            args=(str(order_id),),
            kwargs={},
            options={} if request_id is None else {REQUEST_ID_OPTION: request_id},
        )
        return OutgoingMessage(self._queue_name, message.encode(), message.message_id)
