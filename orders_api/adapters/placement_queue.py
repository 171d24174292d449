"""The placement queue: its topology and the message that asks a worker to place one order.

The API publishes by queue and actor name and never imports the workers; the names and the
message format are dramatiq's own, so the Dramatiq worker consumes what is published here.
"""

from __future__ import annotations

import uuid

import dramatiq
from dramatiq.brokers.rabbitmq import DEAD_MESSAGE_TTL
from dramatiq.common import dq_name, xq_name

from orders_api.adapters.confirmed_publisher import ConfirmedPublisher, QueueDeclaration

#: Name of the Dramatiq actor that places an order on the exchange.
PLACE_ORDER_ACTOR = "place_order"


def queue_declarations(queue_name: str) -> tuple[QueueDeclaration, ...]:
    """The placement queue, its delay queue and its dead-letter queue, exactly as Dramatiq declares them.

    Declaring them with any other arguments would make RabbitMQ refuse the worker's own
    declaration (406 PRECONDITION_FAILED); a test declares both ways to hold this in place.
    """
    dead_lettering = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}
    return (
        QueueDeclaration(queue_name, dead_lettering),
        QueueDeclaration(dq_name(queue_name), dead_lettering),
        QueueDeclaration(xq_name(queue_name), {"x-message-ttl": DEAD_MESSAGE_TTL}),
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
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=self._queue_name,
            actor_name=PLACE_ORDER_ACTOR,
            args=(str(order_id),),
            kwargs={},
            options={},
        )
        self._publisher.publish(self._queue_name, message.encode(), message_id=message.message_id)
