"""RabbitMQ: where it is, the placement queue, and the policies ``orders-broker-setup`` puts on it."""

from __future__ import annotations

from pydantic import Field

from orders_api.settings.base import SettingsBase

#: Deliveries after which RabbitMQ dead-letters a placement message: the backstop for a message
#: that kills its worker before the order's own poison check can see it. High enough that
#: innocent messages, returned to the queue each time a worker holding them dies, never reach it.
DEFAULT_DELIVERY_LIMIT = 20
#: A week, as Dramatiq keeps dead letters.
DEFAULT_DEAD_LETTER_TTL_MS = 7 * 24 * 3600 * 1000


class BrokerSettings(SettingsBase):
    """The broker, the queue the API publishes to and the workers consume, and its policies."""

    #: ``%2F`` is the default vhost. A cluster is several nodes' URLs separated by ``;``
    #: (Dramatiq's notation, read by :mod:`orders_api.adapters.rabbitmq.connections`): every client
    #: connects to the first node that answers and moves to another when its node goes away.
    rabbitmq_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/%2F",
        description="RabbitMQ's URL; several nodes' URLs separated by `;`.",
    )
    #: Through it the placement queues' policies are set (:mod:`orders_api.adapters.queue_policies`).
    rabbitmq_management_url: str | None = Field(
        None,
        description="RabbitMQ's management API (`;` between nodes); unset: RABBITMQ_URL's hosts, port 15672.",
    )
    placement_queue: str = Field(
        "order-placement", description="The queue holding one message per order still to be placed."
    )
    confirm_timeout_s: float = Field(
        2.0, gt=0, description="Longest wait of a request for the broker's confirm; then it rolls back."
    )
    #: A policy, so it can be changed on existing queues (``orders-broker-setup``).
    placement_delivery_limit: int = Field(
        DEFAULT_DELIVERY_LIMIT,
        ge=1,
        description="Deliveries of a placement message before it is dead-lettered.",
    )
    dead_letter_ttl_ms: int = Field(
        DEFAULT_DEAD_LETTER_TTL_MS, gt=0, description="How long a dead letter is kept (a policy too)."
    )
