"""Each delivery is settled on the channel it came from, never on the one that replaced it.

Delivery tags restart at 1 on every channel, and Dramatiq settles a message through whichever
consumer its queue has when the work ends. These tests take two consumers in turn on the real
broker, the first closed as a lost connection would close it, and settle the first one's delivery
through the second.
"""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.common import dq_name

from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.placement_helpers import eventually
from workers.broker import PlacementBroker

pytestmark = pytest.mark.integration


def placement_message(queue: str, order_id: str) -> dramatiq.Message[None]:
    return dramatiq.Message(
        queue_name=queue, actor_name="place_order", args=(order_id,), kwargs={}, options={}
    )


def first_delivery(consumer: dramatiq.Consumer) -> dramatiq.MessageProxy:
    """The consumer's first delivery, waiting for it a moment."""
    delivery: dramatiq.MessageProxy = eventually(lambda: next(consumer))
    return delivery


@pytest.mark.parametrize("settle", ["ack", "nack"])
def test_a_delivery_from_a_closed_channel_never_settles_the_new_channels_message_with_its_tag(
    settings: Settings, rabbit: RabbitAdmin, settle: str
) -> None:
    queue, delay_queue = settings.placement_queue, dq_name(settings.placement_queue)
    broker = PlacementBroker(url=settings.rabbitmq_url)
    try:
        broker.enqueue(placement_message(queue, "delivered on the old channel"))
        broker.enqueue(placement_message(queue, "waiting on the new channel"), delay=60_000)
        old = broker.consume(queue, prefetch=1, timeout=100)
        stale = first_delivery(old)
        old.close()  # as when its connection was lost: RabbitMQ returns the delivery to the queue
        new = broker.consume(delay_queue, prefetch=1, timeout=100)
        unprocessed = first_delivery(new)
        assert stale._tag == unprocessed._tag, "both channels number their first delivery alike"

        getattr(new, settle)(stale)
        new.close()

        assert [body["args"] for body in rabbit.peek_bodies(delay_queue)] == [["waiting on the new channel"]]
        assert [body["args"] for body in rabbit.peek_bodies(queue)] == [["delivered on the old channel"]]
    finally:
        broker.close()
