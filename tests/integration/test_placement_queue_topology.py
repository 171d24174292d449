"""The placement queues as RabbitMQ enforces them: the backstop against a message that kills its worker."""

from __future__ import annotations

import uuid

import pika
import pytest

from orders_api.adapters.placement_queue import DELIVERY_LIMIT, PlacementPublisher
from orders_api.config import Settings
from tests.integration.placement_helpers import eventually

pytestmark = pytest.mark.integration


def test_a_message_redelivered_past_the_delivery_limit_is_dead_lettered_not_dropped(
    placements: PlacementPublisher, settings: Settings
) -> None:
    order_id = uuid.uuid4()
    placements.request_placement(order_id)  # declares the queues as the API does
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    try:
        channel = connection.channel()
        # Each hand-back counts as a delivery, as when a worker holding the message dies.
        for _ in range(DELIVERY_LIMIT + 1):
            method, _properties, _body = channel.basic_get(settings.placement_queue)
            assert method is not None
            channel.basic_nack(method.delivery_tag, requeue=True)

        def dead_letter() -> tuple[object, object, bytes] | None:
            """the message reaches the dead-letter queue"""
            method, properties, body = channel.basic_get(f"{settings.placement_queue}.XQ", auto_ack=True)
            return None if method is None else (method, properties, body)

        _method, properties, body = eventually(dead_letter)
        assert channel.basic_get(settings.placement_queue)[0] is None
    finally:
        connection.close()
    assert str(order_id).encode() in body
    assert properties.headers["x-first-death-reason"] == "delivery_limit"
