"""Settling each delivery on the channel it came from, and handing a message back to its queue.

Dramatiq's worker has two outcomes for a message: ack it, or nack it, and its RabbitMQ consumer
always nacks with ``requeue=False``, which dead-letters. A message whose retry could not be
scheduled must do neither: it is flagged with :func:`request_requeue` and failed, and
:class:`RequeuingConsumer` (the consumer of ``workers.broker.PlacementBroker``) nacks a flagged
message with ``requeue=True``, so RabbitMQ delivers it again.

Dramatiq also settles every message through whichever consumer its queue has *now*. After a
lost connection (a missed heartbeat, a worker paused past it, a broker restart) that is a new
consumer on a new channel, and delivery tags restart at 1 on every channel: the ack of a message
delivered on the old channel named, on the new one, a different message not yet processed, and
settled it. That message was gone from the queue with its order still pending. The consumer here
settles only what it delivered itself; RabbitMQ already returned the old channel's unsettled
messages to their queue when that channel closed.
"""

from __future__ import annotations

import logging
from functools import partial

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed

#: The attribute of a message proxy that flags it for requeueing; the proxy lives as long as
#: one delivery, so the flag never outlives it.
_REQUEUE_FLAG = "_orders_requeue_on_nack"
#: The attribute of a message proxy naming the consumer that delivered it.
_DELIVERED_BY = "_orders_delivered_by"

logger = logging.getLogger(__name__)


def request_requeue(message: dramatiq.MessageProxy) -> None:
    """Have this delivery of ``message`` handed back to its queue once the worker rejects it."""
    setattr(message, _REQUEUE_FLAG, True)


def requeue_requested(message: dramatiq.MessageProxy) -> bool:
    """Whether :func:`request_requeue` was called for this delivery of ``message``."""
    return getattr(message, _REQUEUE_FLAG, False) is True


class RequeuingConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, settling only its own deliveries and requeueing flagged ones.

    Every other rejection still dead-letters (``requeue=False``). If the connection is gone, the
    nack cannot be sent and RabbitMQ returns the unacked message by itself, as for any other.
    """

    def __next__(self) -> dramatiq.MessageProxy | None:
        """The next delivery, marked as this consumer's (``None`` when none came in time)."""
        message: dramatiq.MessageProxy | None = super().__next__()  # type: ignore[no-untyped-call]
        if message is not None:
            setattr(message, _DELIVERED_BY, self)
        return message

    def ack(self, message: dramatiq.MessageProxy) -> None:
        """Acknowledge ``message`` if this consumer delivered it; its tag means nothing elsewhere."""
        if self._delivered(message):
            super().ack(message)  # type: ignore[no-untyped-call]  # dramatiq leaves it untyped

    def nack(self, message: dramatiq.MessageProxy) -> None:
        """Reject ``message``: back to its queue if flagged, else into the dead-letter queue."""
        if not self._delivered(message):
            return
        if not requeue_requested(message):
            super().nack(message)  # type: ignore[no-untyped-call]  # dramatiq leaves it untyped
            return
        # The same bookkeeping and errors as ``_RabbitmqConsumer.nack``, with requeue=True.
        try:
            self.known_tags.remove(message._tag)
            self.connection.add_callback_threadsafe(
                partial(self.channel.basic_nack, message._tag, requeue=True),
            )
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError) as error:
            raise ConnectionClosed(error) from None  # type: ignore[no-untyped-call]
        except KeyError:
            self.logger.warning("Failed to requeue message %s: not in known tags.", message.message_id)

    def _delivered(self, message: dramatiq.MessageProxy) -> bool:
        """Whether this consumer delivered ``message``; else say that it is left to RabbitMQ."""
        if getattr(message, _DELIVERED_BY, None) is self:
            return True
        logger.warning(
            "message %s came on a channel since closed: not settled on the new one,"
            " where its delivery tag names another message; RabbitMQ has returned it to its queue",
            message.message_id,
        )
        return False
