"""The Dramatiq broker the workers consume from: RabbitMQ with confirms and bounded waits."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import dramatiq
import pika.frame
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, xq_name
from dramatiq.middleware import CurrentMessage, ShutdownNotifications

from orders_api.adapters.rabbitmq.connections import URL_SEPARATOR, connection_name, node_urls
from orders_api.adapters.rabbitmq.placement_queue import queue_declarations
from orders_api.settings.workers import WorkerSettings
from workers.liveness import WorkerLiveness
from workers.queue_policies import QueuePolicies
from workers.request_id_middleware import RequestIds
from workers.requeue import RequeuingConsumer
from workers.retries import DeadLetteringRetries, GiveUpHandler
from workers.time_limit import LiftableTimeLimit

#: Seconds between heartbeats; a dead connection is noticed within about two of them.
HEARTBEAT_S = 20
#: Seconds a worker's connection may stay blocked by a broker alarm before it is dropped: longer
#: than the API's (:data:`orders_api.adapters.rabbitmq.connections.BLOCKED_CONNECTION_TIMEOUT_S`).
WORKER_BLOCKED_CONNECTION_TIMEOUT_S = 30


def bounded_url(url: str, connect_timeout_s: float) -> str:
    """``url`` with pika's connection timeouts set on each node's URL, unless that URL already sets them.

    Without them a server that accepts TCP but never completes the AMQP handshake stalls a
    worker for pika's 15 s default, and a blocked connection stalls it forever. ``url`` may name
    several nodes, separated by ``;`` (:mod:`orders_api.adapters.rabbitmq.connections`); Dramatiq's
    broker then connects to the first that answers, so each node's attempt must be bounded.
    """
    return URL_SEPARATOR.join(_bounded_node_url(node, connect_timeout_s) for node in node_urls(url))


def _bounded_node_url(url: str, connect_timeout_s: float) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(connect_timeout_s))
    query.setdefault("stack_timeout", str(2 * connect_timeout_s))
    query.setdefault("heartbeat", str(HEARTBEAT_S))
    query.setdefault("blocked_connection_timeout", str(WORKER_BLOCKED_CONNECTION_TIMEOUT_S))
    return urlunsplit(parts._replace(query=urlencode(query)))


#: How the workers' connections introduce themselves in RabbitMQ's console.
CONNECTION_ROLE = "orders-worker"


class PlacementBroker(RabbitmqBroker):
    """Dramatiq's RabbitMQ broker, declaring its queues exactly as the API does.

    Dramatiq would declare classic queues with arguments of its own; RabbitMQ refuses (406) to
    re-declare a queue with different arguments, so both sides use
    :func:`orders_api.adapters.rabbitmq.placement_queue.queue_declarations`. Its consumers requeue the
    messages whose retry could not be scheduled (:class:`workers.requeue.RequeuingConsumer`).
    Every connection carries the process's ``connection_name``.

    It publishes (retries, answers handed to the courier) and declares queues over one connection
    per process, one operation at a time. Dramatiq keeps a publishing connection per thread, which
    under gevent is per greenlet: up to ``WORKER_THREADS`` connections per process, each opened by
    its greenlet's first retry (an AMQP handshake, a channel, confirms) and closed by the broker
    once idle for two heartbeats. A confirmed publish takes about a millisecond, a greenlet needs
    a few a second at most, so one connection carries them all.
    """

    def __init__(
        self, *, url: str, confirm_delivery: bool = True, middleware: list[dramatiq.Middleware] | None = None
    ) -> None:
        super().__init__(url=url, confirm_delivery=confirm_delivery, middleware=middleware)
        # Built in the worker process itself (the CLI imports the wiring after forking), so the
        # name carries that process's pid; pika adds it to its own client properties.
        nodes = self.parameters if isinstance(self.parameters, list) else [self.parameters]
        for node in nodes:
            node.client_properties = {"connection_name": connection_name(CONNECTION_ROLE)}
        # Where Dramatiq keeps "this thread's" connection and channel: here, the process's. It
        # only gets, sets and deletes attributes on it, which any object allows.
        self.state = SimpleNamespace()  # type: ignore[assignment]
        # Re-entrant: a middleware's enqueue hook may publish in turn.
        self._publishing = threading.RLock()

    def enqueue(self, message: dramatiq.Message[Any], *, delay: int | None = None) -> dramatiq.Message[Any]:
        """Dramatiq's enqueue (with its reconnecting retries) on the one publishing connection."""
        with self._publishing:
            return super().enqueue(message, delay=delay)

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        """Dramatiq's, on the same connection, which each consumer thread uses as it starts."""
        with self._publishing:
            super().declare_queue(queue_name, ensure=ensure)

    def get_queue_message_counts(self, queue_name: str) -> tuple[int, int, int]:
        """Dramatiq's (for tests), on the same connection."""
        with self._publishing:
            return super().get_queue_message_counts(queue_name)

    def flush(self, queue_name: str) -> None:
        """Dramatiq's (for tests), on the same connection."""
        with self._publishing:
            super().flush(queue_name)

    @property
    def consumer_class(self) -> type[RequeuingConsumer]:
        """Dramatiq's consumer, which also requeues the messages flagged for it."""
        return RequeuingConsumer

    def _declaration(self, name: str, canonical_name: str) -> pika.frame.Method:
        [declaration] = [d for d in queue_declarations(canonical_name) if d.name == name]
        return self.channel.queue_declare(queue=name, durable=True, arguments=declaration.arguments)

    def _declare_queue(self, queue_name: str) -> pika.frame.Method:
        return self._declaration(queue_name, queue_name)

    def _declare_dq_queue(self, queue_name: str) -> pika.frame.Method:
        return self._declaration(dq_name(queue_name), queue_name)

    def _declare_xq_queue(self, queue_name: str) -> pika.frame.Method:
        return self._declaration(xq_name(queue_name), queue_name)


def create_broker(
    settings: WorkerSettings,
    on_give_up: GiveUpHandler,
    *,
    time_limit: LiftableTimeLimit,
    claim_renewal: dramatiq.Middleware,
    extra_middleware: Sequence[dramatiq.Middleware] = (),
) -> RabbitmqBroker:
    """A broker whose retries never lose a message and report every message they give up on.

    ``extra_middleware`` (say, Dramatiq's Prometheus middleware) is added after the others.
    """
    return PlacementBroker(
        url=bounded_url(settings.rabbitmq_url, settings.connect_timeout_s),
        confirm_delivery=True,
        middleware=[
            # First: its id is bound before the others' hooks and cleared after them.
            RequestIds(),
            time_limit,
            ShutdownNotifications(),
            CurrentMessage(),
            DeadLetteringRetries(on_give_up=on_give_up),
            WorkerLiveness(settings.worker_liveness_file),
            claim_renewal,
            QueuePolicies(settings),
            *extra_middleware,
        ],
    )
