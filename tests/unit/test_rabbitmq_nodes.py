"""``RABBITMQ_URL`` naming several nodes: how each client reads it, and in which order it tries them."""

from __future__ import annotations

import os
import socket

import pytest

from orders_api.adapters.rabbitmq.connections import after, connection_name, connection_parameters, node_urls
from workers.broker import PlacementBroker, bounded_url

pytestmark = pytest.mark.unit

NODE_A = "amqp://alice:secret@rabbit-a:5672/orders"
NODE_B = "amqp://bob:hidden@rabbit-b:5673/%2F"
NODE_C = "amqp://guest:guest@127.0.0.1:5674/orders"


@pytest.mark.parametrize(
    ("url", "nodes"),
    [
        (NODE_A, [NODE_A]),
        (f"{NODE_A};{NODE_B};{NODE_C}", [NODE_A, NODE_B, NODE_C]),
        (f" {NODE_A} ;\n{NODE_B};", [NODE_A, NODE_B]),
    ],
)
def test_a_url_names_its_nodes_in_order_separated_by_semicolons(url: str, nodes: list[str]) -> None:
    assert node_urls(url) == nodes


@pytest.mark.parametrize("url", ["", " ; ;"])
def test_a_url_naming_no_node_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="names no RabbitMQ node"):
        node_urls(url)


def test_each_node_gets_its_own_address_credentials_and_vhost_and_the_same_bounded_waits() -> None:
    parameters = connection_parameters(
        f"{NODE_A};{NODE_B}",
        connect_timeout_s=1.5,
        blocked_connection_timeout_s=7.0,
        connection_name="test",
        heartbeat_s=9,
    )

    assert [(p.host, p.port, p.virtual_host, p.credentials.username) for p in parameters] == [
        ("rabbit-a", 5672, "orders", "alice"),
        ("rabbit-b", 5673, "/", "bob"),
    ]
    for each in parameters:
        assert (each.socket_timeout, each.stack_timeout, each.connection_attempts) == (1.5, 3.0, 1)
        assert (each.blocked_connection_timeout, each.heartbeat) == (7.0, 9)
        assert each.client_properties == {"connection_name": "test"}


def test_the_heartbeat_is_left_to_the_url_and_the_server_unless_given() -> None:
    [parameters] = connection_parameters(
        f"{NODE_A}?heartbeat=4", connect_timeout_s=2, blocked_connection_timeout_s=10, connection_name="test"
    )

    assert parameters.heartbeat == 4


@pytest.mark.parametrize(
    ("last", "order"),
    [(None, ["a", "b", "c"]), (0, ["b", "c", "a"]), (1, ["c", "a", "b"]), (2, ["a", "b", "c"])],
)
def test_after_losing_a_node_the_next_one_is_tried_first_and_the_lost_one_last(
    last: int | None, order: list[str]
) -> None:
    assert after(["a", "b", "c"], last) == order


def test_the_workers_bound_the_connection_to_each_node_and_keep_what_a_url_sets_itself() -> None:
    url = bounded_url(f"{NODE_A};{NODE_B}?heartbeat=5", connect_timeout_s=2.0)

    [first, second] = node_urls(url)
    assert first.startswith(f"{NODE_A}?") and second.startswith(f"{NODE_B}?")
    assert "heartbeat=20" in first and "heartbeat=5" in second
    for node in (first, second):
        assert "socket_timeout=2.0" in node and "stack_timeout=4.0" in node
        assert "blocked_connection_timeout=30" in node


def test_the_workers_broker_reads_every_node_with_its_bounds() -> None:
    broker = PlacementBroker(url=bounded_url(f"{NODE_A};{NODE_B};{NODE_C}", connect_timeout_s=2.0))

    assert isinstance(broker.parameters, list)
    assert [(p.host, p.port) for p in broker.parameters] == [
        ("rabbit-a", 5672),
        ("rabbit-b", 5673),
        ("127.0.0.1", 5674),
    ]
    assert {(p.socket_timeout, p.stack_timeout, p.heartbeat) for p in broker.parameters} == {(2.0, 4.0, 20)}


def test_the_workers_connections_are_named_after_the_worker_its_host_and_process() -> None:
    broker = PlacementBroker(url=bounded_url(f"{NODE_A};{NODE_B}", connect_timeout_s=2.0))

    expected = f"orders-worker {socket.gethostname()} pid {os.getpid()}"
    assert [p.client_properties for p in broker.parameters] == [{"connection_name": expected}] * 2
    assert connection_name("orders-worker") == expected
