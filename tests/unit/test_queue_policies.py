"""The placement queues' policies and where the management API is found: pure rules, no broker."""

from __future__ import annotations

import re

import pytest

from orders_api.adapters.rabbitmq.management import ManagementNode, management_nodes, vhost_of
from orders_api.adapters.rabbitmq.placement_queue import queue_declarations, queue_policies

pytestmark = pytest.mark.unit

QUEUE = "order-placement.a+b"


def test_each_queue_has_one_policy_whose_pattern_matches_that_queue_alone() -> None:
    policies = queue_policies(QUEUE)
    names = [declaration.name for declaration in queue_declarations(QUEUE)]

    assert [policy.queue for policy in policies] == names
    for policy in policies:
        assert [name for name in names if re.search(policy.pattern, name)] == [policy.queue]
    assert not re.search(policies[0].pattern, "order-placement.aab")  # the dot and plus are escaped
    assert len({policy.name for policy in policies}) == 3


def test_the_queues_are_declared_with_their_type_alone() -> None:
    assert {tuple(d.arguments.items()) for d in queue_declarations(QUEUE)} == {(("x-queue-type", "quorum"),)}


def test_the_policies_carry_the_configured_limit_and_ttl_and_dead_letter_into_the_dead_letter_queue() -> None:
    main, delay, dead = queue_policies(QUEUE, delivery_limit=7, dead_letter_ttl_ms=1000)

    assert main.definition == {
        "dead-letter-exchange": "",
        "dead-letter-routing-key": f"{QUEUE}.XQ",
        "dead-letter-strategy": "at-least-once",
        "overflow": "reject-publish",
        "delivery-limit": 7,
    }
    assert delay.definition == {
        key: value for key, value in main.definition.items() if key != "delivery-limit"
    }
    assert dead.definition == {"message-ttl": 1000}
    assert main.body()["apply-to"] == "queues"


@pytest.mark.parametrize(
    ("rabbitmq_url", "management_url", "expected"),
    [
        (
            "amqp://alice:s%40cret@rabbit-0:5672/orders;amqp://alice:s%40cret@rabbit-1:5672/orders",
            None,
            [
                ManagementNode("http://rabbit-0:15672", "alice", "s@cret"),
                ManagementNode("http://rabbit-1:15672", "alice", "s@cret"),
            ],
        ),
        ("amqp://127.0.0.1", None, [ManagementNode("http://127.0.0.1:15672", "guest", "guest")]),
        (
            "amqp://alice:pw@rabbit:5672/%2F",
            "https://admin:root@console.example:443/rabbit/;http://other:15672",
            [
                ManagementNode("https://console.example:443/rabbit", "admin", "root"),
                ManagementNode("http://other:15672", "alice", "pw"),
            ],
        ),
    ],
)
def test_the_management_api_is_the_one_configured_or_else_the_brokers_hosts_on_port_15672(
    rabbitmq_url: str, management_url: str | None, expected: list[ManagementNode]
) -> None:
    assert management_nodes(rabbitmq_url, management_url) == expected


@pytest.mark.parametrize(
    ("url", "vhost"),
    [("amqp://h:5672/%2F", "/"), ("amqp://h:5672/orders_test_1", "orders_test_1"), ("amqp://h", "/")],
)
def test_the_vhost_is_the_one_the_amqp_url_connects_to(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost
