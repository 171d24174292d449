"""The Dramatiq broker the workers consume from: RabbitMQ with confirms and bounded waits."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import CurrentMessage, ShutdownNotifications, TimeLimit

from workers.retries import DeadLetteringRetries, GiveUpHandler
from workers.settings import WorkerSettings

#: Seconds between heartbeats; a dead connection is noticed within about two of them.
HEARTBEAT_S = 20
#: Seconds a connection may stay blocked by a broker alarm before it is dropped.
BLOCKED_CONNECTION_TIMEOUT_S = 30


def bounded_url(url: str, connect_timeout_s: float) -> str:
    """``url`` with pika's connection timeouts set, unless the URL already sets them.

    Without them a server that accepts TCP but never completes the AMQP handshake stalls a
    worker for pika's 15 s default, and a blocked connection stalls it forever.
    """
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("socket_timeout", str(connect_timeout_s))
    query.setdefault("stack_timeout", str(2 * connect_timeout_s))
    query.setdefault("heartbeat", str(HEARTBEAT_S))
    query.setdefault("blocked_connection_timeout", str(BLOCKED_CONNECTION_TIMEOUT_S))
    return urlunsplit(parts._replace(query=urlencode(query)))


def create_broker(settings: WorkerSettings, on_give_up: GiveUpHandler) -> RabbitmqBroker:
    """A broker whose retries dead-letter instead of losing messages and report what they give up."""
    return RabbitmqBroker(
        url=bounded_url(settings.shared.rabbitmq_url, settings.shared.connect_timeout_s),
        confirm_delivery=True,
        middleware=[
            TimeLimit(),
            ShutdownNotifications(),
            CurrentMessage(),
            DeadLetteringRetries(on_give_up=on_give_up),
        ],
    )
