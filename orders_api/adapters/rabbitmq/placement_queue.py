"""The placement queue: its topology and the message that asks a worker to place one order.

The API publishes by queue and actor name and never imports the workers; the message format is
Dramatiq's own, so the Dramatiq worker consumes what is published here.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq.common import dq_name, xq_name

from orders_api import request_ids
from orders_api.adapters.rabbitmq.confirmed_publisher import (
    ConfirmedPublisher,
    OutgoingMessage,
    QueueDeclaration,
)
from orders_api.settings.broker import DEFAULT_DEAD_LETTER_TTL_MS, DEFAULT_DELIVERY_LIMIT

#: Name of the Dramatiq actor that places an order on the exchange.
PLACE_ORDER_ACTOR = "place_order"
#: The message option that carries the id of the request that asked for the placement.
REQUEST_ID_OPTION = "request_id"
#: Priority of the placement queues' policies. RabbitMQ applies one policy per queue, the one of
#: highest priority; above the 0 of a site-wide catch-all policy, so that such a policy cannot
#: silently take the dead-lettering away from these queues.
POLICY_PRIORITY = 100
#: The only argument the queues are declared with: a queue's type cannot come from a policy.
#: Everything else is in their policies, which, unlike arguments, can change on a live queue.
QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class QueuePolicy:
    """A RabbitMQ policy applying to exactly one queue, as the management API takes it."""

    name: str
    queue: str
    definition: dict[str, Any]
    priority: int = POLICY_PRIORITY

    @property
    def pattern(self) -> str:
        """A regular expression matching the queue's name and nothing else, so patterns never overlap."""
        return "^" + re.escape(self.queue) + "$"

    def body(self) -> dict[str, Any]:
        """The JSON body of ``PUT /api/policies/{vhost}/{name}``."""
        return {
            "pattern": self.pattern,
            "definition": self.definition,
            "apply-to": "queues",
            "priority": self.priority,
        }


def queue_declarations(queue_name: str) -> tuple[QueueDeclaration, ...]:
    """The placement queue, its delay queue and its dead-letter queue, for the API and the workers alike.

    All three are quorum queues: replicated in a cluster, measured faster and with a better tail
    than classic queues for confirmed publishes here (docs/queue-types.md), and the only kind
    that counts redeliveries. They are declared with their type only; their dead-lettering,
    overflow, delivery limit and message TTL come from :func:`queue_policies`, since RabbitMQ
    refuses (406) to re-declare a queue with arguments that differ from its own, which would
    make any change of those settings a deletion of the queues. The names follow Dramatiq's
    (``.DQ``, ``.XQ``); the workers' broker declares them through this same function.
    """
    return tuple(
        QueueDeclaration(name, dict(QUEUE_ARGUMENTS))
        for name in (queue_name, dq_name(queue_name), xq_name(queue_name))
    )


def queue_policies(
    queue_name: str,
    *,
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    dead_letter_ttl_ms: int = DEFAULT_DEAD_LETTER_TTL_MS,
) -> tuple[QueuePolicy, ...]:
    """The policies of the three placement queues, one each, on patterns that match only that queue.

    The placement queue dead-letters a message delivered more than ``delivery_limit`` times (a
    message that keeps killing its worker), and both it and the delay queue dead-letter what a
    worker rejects into the dead-letter queue, *at least once*: a rejected message is kept
    until the dead-letter queue has it, which RabbitMQ requires to pair with ``reject-publish``
    overflow. The dead-letter queue drops letters older than ``dead_letter_ttl_ms``.
    """
    dead_lettering = {
        "dead-letter-exchange": "",
        "dead-letter-routing-key": xq_name(queue_name),
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
    }
    return (
        QueuePolicy(
            policy_name(queue_name), queue_name, {**dead_lettering, "delivery-limit": delivery_limit}
        ),
        QueuePolicy(policy_name(dq_name(queue_name)), dq_name(queue_name), dead_lettering),
        QueuePolicy(
            policy_name(xq_name(queue_name)), xq_name(queue_name), {"message-ttl": dead_letter_ttl_ms}
        ),
    )


def policy_name(queue: str) -> str:
    """The name of the policy of ``queue``: the queue's own, so that an operator finds one from the other."""
    return f"orders:{queue}"


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
        # (workers.request_id_middleware); the sweep's and the replays' messages have none.
        request_id = request_ids.for_order(order_id)
        message: dramatiq.Message[None] = dramatiq.Message(
            queue_name=self._queue_name,
            actor_name=PLACE_ORDER_ACTOR,
            args=(str(order_id),),
            kwargs={},
            options={} if request_id is None else {REQUEST_ID_OPTION: request_id},
        )
        return OutgoingMessage(self._queue_name, message.encode(), message.message_id)
