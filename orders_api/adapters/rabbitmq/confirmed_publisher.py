"""Publishes persistent messages to RabbitMQ and waits, for a bounded time, for the broker's confirm.

One asynchronous pika connection per process, driven by its own I/O thread, serves every request
thread: publishes from many threads share one connection and their confirms arrive in windows,
heartbeats are answered even while the API is idle, and each caller waits on a future with a
deadline, so neither a dead nor a blocked broker can hold a request for longer than the timeouts.
The URL may name the nodes of a cluster (:mod:`orders_api.adapters.rabbitmq.connections`): the
connection goes to the first that answers, and once it is lost, to the next.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import pika
import pika.channel
import pika.frame
import pika.spec
from pika.adapters.select_connection import IOLoop, SelectConnection

from orders_api.adapters.rabbitmq.connections import after, connection_name, connection_parameters

logger = logging.getLogger(__name__)

#: Seconds the I/O thread waits before reconnecting after losing the broker.
RECONNECT_DELAY_S = 0.5


class PublishError(Exception):
    """The broker did not confirm the message: treat it as not sent."""


class PublishObserver(Protocol):
    """Told how each publish ended, for metrics; the publisher works the same without one."""

    def confirmed(self, seconds: float) -> None:
        """Every message of one publish was confirmed, ``seconds`` after the publish began."""

    def failed(self, messages: int) -> None:
        """A publish of ``messages`` messages raised :class:`PublishError`."""


class _Unobserved:
    def confirmed(self, seconds: float) -> None:
        pass

    def failed(self, messages: int) -> None:
        pass


@dataclass(frozen=True)
class QueueDeclaration:
    """A durable queue the publisher declares before its first publish."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingMessage:
    """A message to publish persistently to the queue named by ``routing_key``."""

    routing_key: str
    body: bytes
    message_id: str


@dataclass
class _Unconfirmed:
    future: Future[None]
    message_id: str
    returned_because: str | None = None


class ConfirmedPublisher:
    """Thread-safe publisher with publisher confirms and ``mandatory`` routing.

    :meth:`publish` returns only once RabbitMQ has taken responsibility for the message
    (persisted it in a queue); it raises :class:`PublishError` on a nack, an unroutable message,
    a lost connection or a deadline.
    """

    def __init__(
        self,
        url: str,
        declarations: Sequence[QueueDeclaration],
        *,
        connect_timeout_s: float,
        confirm_timeout_s: float,
        connection_role: str = "orders-api",
        observer: PublishObserver | None = None,
    ) -> None:
        self._url = url
        #: Who the connection says it is in RabbitMQ's console (:func:`connection_name`); may be
        #: changed before the first publish, by a command that publishes through the API's wiring.
        self.connection_role = connection_role
        self._observer: PublishObserver = observer or _Unobserved()
        #: Index, in the URL's nodes, of the node that served the last connection.
        self._last_node: int | None = None
        self._declarations = tuple(declarations)
        self._connect_timeout_s = connect_timeout_s
        self._confirm_timeout_s = confirm_timeout_s
        self._start_lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        """Forget any I/O thread: used at first start and in a forked child, which inherits none."""
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._ioloop: IOLoop | None = None
        self._connection: SelectConnection | None = None
        #: ``host:port`` of the node the connection is to, for the log.
        self._node = ""
        self._healthy = True
        self._channel: pika.channel.Channel | None = None
        self._last_tag = 0
        self._unconfirmed: dict[int, _Unconfirmed] = {}
        self._tags_by_message_id: dict[str, int] = {}

    def publish(self, routing_key: str, body: bytes, *, message_id: str) -> None:
        """Publish ``body`` persistently to ``routing_key`` and wait for the broker's confirm.

        :raises PublishError: the message cannot be taken as stored by the broker.
        """
        self.publish_all([OutgoingMessage(routing_key, body, message_id)])

    def publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish ``messages`` persistently, in one hand-off to the I/O thread, and wait for every confirm.

        One deadline covers them all. Handing a batch over at once wakes the I/O thread once
        and lets the broker confirm the batch in one window.

        :raises PublishError: a message cannot be taken as stored by the broker (the others may be).
        """
        started = time.monotonic()
        try:
            self._publish_all(messages)
        except PublishError:
            self._observe(self._observer.failed, len(messages))
            raise
        self._observe(self._observer.confirmed, time.monotonic() - started)

    @staticmethod
    def _observe(report: Callable[[Any], None], value: float) -> None:
        """Report to the observer; its error is logged, never turned into the publish's."""
        try:
            report(value)
        except Exception:
            logger.exception("publish observer failed")

    def _publish_all(self, messages: Sequence[OutgoingMessage]) -> None:
        self._ensure_started()
        if not self._ready.wait(self._connect_timeout_s):
            raise PublishError("RabbitMQ is not reachable")
        ioloop = self._ioloop
        if ioloop is None:
            raise PublishError("RabbitMQ is not reachable")
        confirms: list[Future[None]] = [Future() for _ in messages]
        try:
            ioloop.add_callback_threadsafe(partial(self._publish_all_in_loop, messages, confirms))
        except Exception as error:
            raise PublishError(f"cannot hand the messages to the I/O thread: {error}") from error
        deadline = time.monotonic() + self._confirm_timeout_s
        for confirmed in confirms:
            try:
                confirmed.result(timeout=max(0.0, deadline - time.monotonic()))
            except FutureTimeout as error:
                raise PublishError(f"no confirm from RabbitMQ within {self._confirm_timeout_s} s") from error

    def is_connected(self) -> bool:
        """Whether the publisher currently holds an open, confirming channel."""
        return self._ready.is_set()

    def wait_until_connected(self, timeout_s: float) -> bool:
        """Whether a confirming channel is open within ``timeout_s``, connecting first if need be.

        For readiness probes: it answers about the very connection requests publish on, and
        starts the I/O thread so that a process that has served no order yet is probed too.
        """
        self._ensure_started()
        return self._ready.wait(timeout_s)

    def close(self) -> None:
        """Close the connection and stop the I/O thread; unconfirmed publishes fail."""
        thread = self._thread
        if thread is None or self._pid != os.getpid():
            return
        self._stopping.set()
        ioloop = self._ioloop
        if ioloop is not None:
            try:
                ioloop.add_callback_threadsafe(self._close_in_loop)
            except Exception:
                logger.debug("publisher connection already gone at close", exc_info=True)
        thread.join(timeout=self._connect_timeout_s + 1)

    def _ensure_started(self) -> None:
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._start_lock:
            if self._pid != os.getpid():
                self._reset()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="rabbitmq-publisher", daemon=True)
                self._thread.start()

    def _parameters(self) -> list[pika.URLParameters]:
        """Each node's parameters, in the URL's order."""
        return connection_parameters(
            self._url,
            connect_timeout_s=self._connect_timeout_s,
            connection_name=connection_name(self.connection_role),
        )

    def _run(self) -> None:
        """Own the connection: open it to the first node that answers, run its loop, reopen it when lost."""
        while not self._stopping.is_set():
            ioloop = IOLoop()
            self._ioloop = ioloop
            try:
                nodes = self._parameters()
                SelectConnection.create_connection(
                    after(nodes, self._last_node),
                    partial(self._on_connection_done, ioloop, nodes),
                    custom_ioloop=ioloop,
                )
                ioloop.start()
            except Exception:
                logger.exception("publisher I/O loop crashed")
            finally:
                self._ready.clear()
                self._connection = None
                self._ioloop = None
                ioloop.close()
            self._fail_unconfirmed("the connection to RabbitMQ was lost before the confirm")
            self._stopping.wait(RECONNECT_DELAY_S)

    def _on_connection_done(
        self, ioloop: IOLoop, nodes: list[pika.URLParameters], outcome: SelectConnection | BaseException
    ) -> None:
        """The nodes were tried in turn: take the connection to the first that answered, or retry later."""
        if isinstance(outcome, BaseException):
            if not self._stopping.is_set():
                # Warn once per outage rather than on every reconnect attempt.
                level = logging.WARNING if self._healthy else logging.DEBUG
                where = ", ".join(f"{node.host}:{node.port}" for node in nodes)
                logger.log(level, "cannot connect to RabbitMQ at %s: %r", where, outcome)
                self._healthy = False
            ioloop.stop()
            return
        connection = outcome
        self._connection = connection
        connection.add_on_close_callback(self._on_connection_closed)
        if self._stopping.is_set():
            connection.close()
            return
        host, port = connection.params.host, connection.params.port
        self._last_node = next(i for i, node in enumerate(nodes) if (node.host, node.port) == (host, port))
        self._node = f"{host}:{port}"
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_connection_closed(self, connection: SelectConnection, reason: BaseException) -> None:
        if not self._stopping.is_set():
            logger.warning("connection to RabbitMQ closed: %s", reason)
        self._ready.clear()
        self._channel = None
        connection.ioloop.stop()

    def _on_channel_open(self, channel: pika.channel.Channel) -> None:
        self._channel = channel
        self._last_tag = 0
        channel.add_on_close_callback(self._on_channel_closed)
        channel.add_on_return_callback(self._on_return)
        channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=partial(self._declare_queue, 0))

    def _on_channel_closed(self, channel: pika.channel.Channel, reason: BaseException) -> None:
        """Treat a closed channel like a lost connection, so one code path recovers both."""
        if not self._stopping.is_set():
            logger.warning("publisher channel closed: %s", reason)
        self._ready.clear()
        self._channel = None
        self._fail_unconfirmed(f"the channel to RabbitMQ closed: {reason}")
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()

    def _declare_queue(self, index: int, _frame: pika.frame.Method | None = None) -> None:
        """Declare the queues one after another, then open the publisher for business."""
        channel = self._channel
        if channel is None:
            return
        if index == len(self._declarations):
            logger.info("publisher connected to RabbitMQ at %s with confirms on", self._node)
            self._healthy = True
            self._ready.set()
            return
        declaration = self._declarations[index]
        channel.queue_declare(
            queue=declaration.name,
            durable=True,
            arguments=declaration.arguments,
            callback=partial(self._declare_queue, index + 1),
        )

    def _publish_all_in_loop(
        self, messages: Sequence[OutgoingMessage], confirms: Sequence[Future[None]]
    ) -> None:
        for message, confirmed in zip(messages, confirms, strict=True):
            self._publish_in_loop(message, confirmed)

    def _publish_in_loop(self, message: OutgoingMessage, confirmed: Future[None]) -> None:
        channel = self._channel
        if channel is None or not channel.is_open or not self._ready.is_set():
            confirmed.set_exception(PublishError("no open channel to RabbitMQ"))
            return
        try:
            channel.basic_publish(
                exchange="",
                routing_key=message.routing_key,
                body=message.body,
                properties=pika.BasicProperties(
                    delivery_mode=pika.DeliveryMode.Persistent,
                    content_type="application/json",
                    message_id=message.message_id,
                ),
                mandatory=True,
            )
        except Exception as error:
            confirmed.set_exception(PublishError(f"publish failed: {error}"))
            return
        self._last_tag += 1
        self._unconfirmed[self._last_tag] = _Unconfirmed(confirmed, message.message_id)
        self._tags_by_message_id[message.message_id] = self._last_tag

    def _on_return(
        self,
        _channel: pika.channel.Channel,
        method: pika.spec.Basic.Return,
        properties: pika.spec.BasicProperties,
        _body: bytes,
    ) -> None:
        """Remember why a message came back; RabbitMQ sends its confirm right after the return."""
        tag = self._tags_by_message_id.get(properties.message_id or "")
        if tag is not None:
            self._unconfirmed[tag].returned_because = f"{method.reply_code} {method.reply_text}"

    def _on_confirm(self, frame: pika.frame.Method) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        tags = [method.delivery_tag]
        if method.multiple:
            tags = [tag for tag in self._unconfirmed if tag <= method.delivery_tag]
        if not acked:
            # A quorum queue that rejected a publish keeps rejecting that channel's publishes
            # after it has room again (RabbitMQ 3.10); a fresh channel is accepted at once.
            self._recycle_channel()
        for tag in tags:
            unconfirmed = self._unconfirmed.pop(tag, None)
            if unconfirmed is None:
                continue
            self._tags_by_message_id.pop(unconfirmed.message_id, None)
            if not acked:
                unconfirmed.future.set_exception(PublishError("RabbitMQ refused the message (nack)"))
            elif unconfirmed.returned_because:
                unconfirmed.future.set_exception(
                    PublishError(f"RabbitMQ could not route the message: {unconfirmed.returned_because}")
                )
            else:
                unconfirmed.future.set_result(None)

    def _recycle_channel(self) -> None:
        """Close the channel after the current callbacks; the connection is then reopened afresh."""
        channel = self._channel
        connection = self._connection
        if channel is not None and connection is not None and channel.is_open:
            self._ready.clear()
            connection.ioloop.add_callback(partial(self._close_channel, channel))

    @staticmethod
    def _close_channel(channel: pika.channel.Channel) -> None:
        """Close ``channel`` unless it is closing already.

        A batch's several nacks each ask for it, and pika raises on closing a channel twice,
        which crashed the I/O loop.
        """
        if channel.is_open:
            channel.close()

    def _fail_unconfirmed(self, reason: str) -> None:
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        self._tags_by_message_id = {}
        for waiting in unconfirmed.values():
            if not waiting.future.done():
                waiting.future.set_exception(PublishError(reason))

    def _close_in_loop(self) -> None:
        """Close the connection, whose callback then stops the loop; or stop the loop if none is open yet.

        A connection still being opened is left to the garbage collector: pika 1.4's connection
        workflow fails an assertion when aborted once a node has accepted the TCP connection.
        """
        connection = self._connection
        if connection is None:
            ioloop = self._ioloop
            if ioloop is not None:
                ioloop.stop()
            return
        if connection.is_closed:
            connection.ioloop.stop()
        elif not connection.is_closing:
            connection.close()
