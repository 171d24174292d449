"""The dead-letter queue in RabbitMQ, read and trimmed by the operator's tooling.

AMQP has no way to look at a message without taking it, so reading holds messages: each is
fetched with ``basic.get`` and left unacknowledged, which hides it from every other consumer
and, on the same channel, from the next ``basic.get``, so one pass never sees a message twice.
Closing the connection hands back whatever was not acknowledged, in its place; a message is
removed only by acknowledging it. The count of messages at the start of the pass bounds it, so
messages dead-lettered meanwhile wait for the next pass. Every wait on the broker is bounded:
connect and handshake by ``connect_timeout_s``, anything after by heartbeats. A URL naming
several nodes (:mod:`orders_api.adapters.rabbitmq.connections`) is served by the first that answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pika
import pika.exceptions
from dramatiq.common import xq_name
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException
from pika.spec import BasicProperties

from orders_api.adapters.rabbitmq.connections import blocking_connection
from orders_api.adapters.rabbitmq.placement_queue import PLACE_ORDER_ACTOR
from orders_api.service_layer.dead_letters import DeadLetter, DeadLetterQueueError

logger = logging.getLogger(__name__)

#: Messages one pass holds at most; a larger queue is worked through in several passes.
MAX_MESSAGES = 10_000
#: Seconds between heartbeats: a broker that stops answering mid-pass is noticed within a few.
HEARTBEAT_S = 10

_BROKER_ERRORS = (pika.exceptions.AMQPError, OSError)
#: What opening a connection may raise besides: pika lets a handshake timeout out as its own.
_CONNECT_ERRORS = (*_BROKER_ERRORS, AMQPConnectorException)


def dead_letter_queue_name(placement_queue: str) -> str:
    """The dead-letter queue of ``placement_queue``, named as Dramatiq names it."""
    return str(xq_name(placement_queue))


class RabbitDeadLetterQueue:
    """The dead-letter queue of the placement queue, on its own short-lived blocking connection."""

    def __init__(
        self, url: str, placement_queue: str, *, connect_timeout_s: float, max_messages: int = MAX_MESSAGES
    ) -> None:
        self._url = url
        self.name = dead_letter_queue_name(placement_queue)
        self._connect_timeout_s = connect_timeout_s
        self._max_messages = max_messages

    @contextmanager
    def hold(self) -> Iterator[HeldMessages]:
        """Hold the queue's messages until the block ends, then hand back those not removed.

        A queue that does not exist yet (no worker has declared it) holds nothing.

        :raises DeadLetterQueueError: the broker cannot be reached or fails mid-way.
        """
        try:
            connection = blocking_connection(
                self._url,
                role="orders-dead-letters",
                connect_timeout_s=self._connect_timeout_s,
                heartbeat_s=HEARTBEAT_S,
            )
        except _CONNECT_ERRORS as error:
            raise DeadLetterQueueError(f"cannot connect to RabbitMQ: {error!r}") from error
        try:
            try:
                held = HeldMessages(self.name, connection.channel(), self._ready_count(connection))
            except _BROKER_ERRORS as error:
                raise DeadLetterQueueError(f"cannot open {self.name}: {error!r}") from error
            yield held
        finally:
            try:
                if connection.is_open:
                    connection.close()  # hands back every message not acknowledged
            except _BROKER_ERRORS:
                logger.debug("dead-letter connection already gone at close", exc_info=True)

    def _ready_count(self, connection: pika.BlockingConnection) -> int:
        """Messages waiting in the queue now (at most one pass's worth), or 0 when it does not exist."""
        count = ready_count(connection, self.name)
        if count > self._max_messages:
            logger.warning(
                "%s holds %d messages; one pass takes the first %d", self.name, count, self._max_messages
            )
        return min(count, self._max_messages)


class HeldMessages:
    """Up to ``limit`` messages of one queue, fetched on demand and held unacknowledged on ``channel``."""

    def __init__(self, queue: str, channel: BlockingChannel, limit: int) -> None:
        self._queue = queue
        self._channel = channel
        self._limit = limit
        self._fetched: list[DeadLetter] = []
        self._exhausted = limit == 0

    def __iter__(self) -> Iterator[DeadLetter]:
        """The held messages, then more fetched as the iteration goes on; each one once per pass."""
        yield from list(self._fetched)
        while not self._exhausted:
            letter = self._fetch()
            if letter is None:
                return
            yield letter

    def remove(self, letter: DeadLetter) -> None:
        """Acknowledge ``letter``: the broker deletes it."""
        try:
            self._channel.basic_ack(letter.receipt)
        except _BROKER_ERRORS as error:
            raise DeadLetterQueueError(f"could not remove {letter.message_id}: {error!r}") from error

    def _fetch(self) -> DeadLetter | None:
        try:
            method, properties, body = self._channel.basic_get(self._queue, auto_ack=False)
        except _BROKER_ERRORS as error:
            raise DeadLetterQueueError(f"could not read {self._queue}: {error!r}") from error
        if method is None:
            self._exhausted = True
            return None
        letter = decode(method.delivery_tag, properties, body)
        self._fetched.append(letter)
        self._exhausted = len(self._fetched) >= self._limit
        return letter


def ready_count(connection: pika.BlockingConnection, queue: str) -> int:
    """Messages ready in ``queue`` now, by a passive declare on a channel of its own; 0 if it does not exist.

    The one way the service counts a queue's messages: the dead-letter commands before a pass,
    and the on-call gauge of dead letters waiting.
    """
    channel = connection.channel()
    try:
        declared = channel.queue_declare(queue, passive=True)
    except pika.exceptions.ChannelClosedByBroker as error:
        if error.reply_code == 404:
            return 0
        raise
    count = int(declared.method.message_count)
    channel.close()
    return count


def dead_letter_count(rabbitmq_url: str, placement_queue: str, *, timeout_s: float) -> int:
    """Messages in the placement queue's dead-letter queue (``.XQ``).

    A connection of its own, opened and closed per question (a few milliseconds, once per cache
    period): the publisher's connection is asynchronous and serves requests, and a question that
    hangs must not hold it.
    """
    connection = blocking_connection(
        rabbitmq_url,
        role="orders-api-gauges",
        connect_timeout_s=timeout_s,
        blocked_connection_timeout_s=timeout_s,
    )
    try:
        return ready_count(connection, dead_letter_queue_name(placement_queue))
    finally:
        if connection.is_open:
            connection.close()


def decode(receipt: int, properties: BasicProperties, body: bytes) -> DeadLetter:
    """What a dead-lettered message says: the Dramatiq message in its body, RabbitMQ's ``x-death`` header.

    A body that is not a Dramatiq message still yields a dead letter, with a stable id derived
    from the body, so that it can be listed and shown.
    """
    message = _json_object(body)
    message_id = message.get("message_id") or getattr(properties, "message_id", None)
    if not message_id:
        message_id = "body-" + hashlib.sha256(body).hexdigest()[:16]
    options = message.get("options")
    retries = options.get("retries", 0) if isinstance(options, dict) else 0
    death = _latest_death(getattr(properties, "headers", None))
    died_at = death.get("time")
    reason = death.get("reason")
    actor_name = message.get("actor_name")
    return DeadLetter(
        message_id=str(message_id),
        actor_name=str(actor_name) if actor_name is not None else None,
        order_id=_order_id(message),
        retries=retries if isinstance(retries, int) else 0,
        dead_lettered_at=died_at if isinstance(died_at, datetime) else None,
        reason=_text(reason) if reason is not None else None,
        message=message,
        receipt=receipt,
    )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        decoded = json.loads(body)
    except ValueError:  # includes undecodable bytes
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _order_id(message: dict[str, Any]) -> uuid.UUID | None:
    args = message.get("args")
    if message.get("actor_name") != PLACE_ORDER_ACTOR or not isinstance(args, list) or not args:
        return None
    try:
        return uuid.UUID(str(args[0]))
    except ValueError:
        return None


def _latest_death(headers: object) -> dict[str, Any]:
    """The most recent entry of RabbitMQ's ``x-death`` header (it puts the newest first), or nothing."""
    deaths = headers.get("x-death") if isinstance(headers, dict) else None
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
