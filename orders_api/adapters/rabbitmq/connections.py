"""How every client of the service reaches RabbitMQ: one node or the nodes of a cluster, every wait bounded.

``RABBITMQ_URL`` names one node or several, in Dramatiq's notation.

Several nodes are several AMQP URLs separated by ``;``, as Dramatiq's ``RabbitmqBroker`` reads
its ``url``: ``amqp://u:p@rabbit-0:5672/%2F;amqp://u:p@rabbit-1:5672/%2F``. Every client of the
broker (the API's publisher, and through it the readiness probe and the reconciliation sweep;
the dead-letter commands; the workers, through Dramatiq) connects to the first node that
answers, in the order given, by pika's own connection workflow: a node that refuses or times out
costs one attempt, bounded by the connect timeouts, before the next is tried. The publisher,
which keeps one connection for good, reconnects beginning with the node after the one it lost.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import TypeVar

import pika

#: Separates the nodes' URLs in ``RABBITMQ_URL``: Dramatiq's notation.
URL_SEPARATOR = ";"
#: Seconds a connection may stay blocked by a broker alarm (memory, disk) before it is dropped:
#: the API's publisher, the broker setup and the dead-letter commands then report the outage
#: rather than hang. The workers' Dramatiq broker (:mod:`workers.broker`) and the applier keep
#: longer bounds of their own.
BLOCKED_CONNECTION_TIMEOUT_S = 10.0

_T = TypeVar("_T")


def node_urls(url: str) -> list[str]:
    """The URL of each node named by ``url``, in order; spaces around a URL and empty entries are ignored.

    :raises ValueError: ``url`` names no node at all.
    """
    urls = [part.strip() for part in url.split(URL_SEPARATOR) if part.strip()]
    if not urls:
        raise ValueError("RABBITMQ_URL names no RabbitMQ node")
    return urls


def connection_name(role: str) -> str:
    """The ``connection_name`` a client of ``role`` (``orders-api``, ``orders-worker``...) shows in RabbitMQ.

    The management console lists connections by it: with the host (the pod's name, under
    Kubernetes) and the process, an operator can tell whose connection is stuck or blocked.
    Read when a connection opens, so that a forked process names its own.
    """
    return f"{role} {socket.gethostname()} pid {os.getpid()}"


def connection_parameters(
    url: str,
    *,
    connect_timeout_s: float,
    connection_name: str,
    blocked_connection_timeout_s: float = BLOCKED_CONNECTION_TIMEOUT_S,
    heartbeat_s: int | None = None,
) -> list[pika.URLParameters]:
    """Connection parameters for each node of ``url``, with every wait of opening a connection bounded.

    One attempt per node: TCP connect within ``connect_timeout_s``, the whole handshake within
    twice that. Given the list, pika tries the nodes in order and gives up after the last one;
    whoever holds the connection decides when to try again.
    """
    parameters = [pika.URLParameters(node) for node in node_urls(url)]
    for each in parameters:
        each.socket_timeout = connect_timeout_s
        each.stack_timeout = 2 * connect_timeout_s
        each.connection_attempts = 1
        each.blocked_connection_timeout = blocked_connection_timeout_s
        if heartbeat_s is not None:
            each.heartbeat = heartbeat_s
        each.client_properties = {"connection_name": connection_name}
    return parameters


def blocking_connection(
    url: str,
    *,
    role: str,
    connect_timeout_s: float,
    blocked_connection_timeout_s: float = BLOCKED_CONNECTION_TIMEOUT_S,
    heartbeat_s: int | None = None,
) -> pika.BlockingConnection:
    """A blocking connection to the first node of ``url`` that answers, named after ``role``.

    How every synchronous client connects (the broker setup, the dead-letter commands, the
    on-call gauge, the applier). The API's publisher opens its asynchronous connection from the
    same :func:`connection_parameters`; the workers connect through Dramatiq (:mod:`workers.broker`).

    :raises pika.exceptions.AMQPConnectionError: no node answered within the bounds.
    """
    return pika.BlockingConnection(
        connection_parameters(
            url,
            connect_timeout_s=connect_timeout_s,
            connection_name=connection_name(role),
            blocked_connection_timeout_s=blocked_connection_timeout_s,
            heartbeat_s=heartbeat_s,
        )
    )


def after(nodes: Sequence[_T], last: int | None) -> list[_T]:
    """``nodes`` in their order, going round from the one after ``nodes[last]`` (from the first if ``None``).

    A client that lost its connection tries the node that served it last only after the others:
    that node is the likeliest to be gone, and one that is unreachable (rather than refusing)
    would cost a whole connect timeout before the next is tried.
    """
    start = 0 if last is None else (last + 1) % len(nodes)
    return [*nodes[start:], *nodes[:start]]
