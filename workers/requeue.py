"""Handing a message back to its queue instead of dead-lettering it.

Dramatiq's worker has two outcomes for a message: ack it, or nack it, and its RabbitMQ consumer
always nacks with ``requeue=False``, which dead-letters. A message whose retry could not be
scheduled must do neither: it is flagged with :func:`request_requeue` and failed, and
:class:`RequeuingConsumer` (the consumer of ``workers.broker.PlacementBroker``) nacks a flagged
message with ``requeue=True``, so RabbitMQ delivers it again.
"""

from __future__ import annotations

from functools import partial

import dramatiq
import pika.exceptions
from dramatiq.brokers.rabbitmq import _RabbitmqConsumer
from dramatiq.errors import ConnectionClosed

#: The attribute of a message proxy that flags it for requeueing; the proxy lives as long as
#: one delivery, so the flag never outlives it.
_REQUEUE_FLAG = "_orders_requeue_on_nack"


def request_requeue(message: dramatiq.MessageProxy) -> None:
    """Have this delivery of ``message`` handed back to its queue once the worker rejects it."""
    setattr(message, _REQUEUE_FLAG, True)


def requeue_requested(message: dramatiq.MessageProxy) -> bool:
    """Whether :func:`request_requeue` was called for this delivery of ``message``."""
    return getattr(message, _REQUEUE_FLAG, False) is True


class RequeuingConsumer(_RabbitmqConsumer):
    """Dramatiq's RabbitMQ consumer, except that it requeues the messages flagged for it.

    Every other rejection still dead-letters (``requeue=False``). If the connection is gone, the
    nack cannot be sent and RabbitMQ returns the unacked message by itself, as for any other.
    """

    def nack(self, message: dramatiq.MessageProxy) -> None:
        """Reject ``message``: back to its queue if flagged, else into the dead-letter queue."""
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
