"""The placement queues as RabbitMQ enforces them: type as argument, everything else from policies."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
from dramatiq.common import dq_name, xq_name

from orders_api.adapters.rabbitmq.confirmed_publisher import PublishError
from orders_api.adapters.rabbitmq.dead_letters import RabbitDeadLetterQueue
from orders_api.adapters.rabbitmq.placement_queue import PlacementPublisher, policy_name, queue_policies
from orders_api.adapters.rabbitmq.queue_topology import set_up_placement_queues
from orders_api.settings.shared import Settings
from orders_testkit.rabbitmq_admin import RabbitAdmin
from tests.integration.conftest import StartWorker
from tests.integration.placement_helpers import eventually
from workers.queue_policies import QueuesNotReadyError

pytestmark = pytest.mark.integration

#: The arguments the placement queues were declared with before their settings moved to policies.
LEGACY_DELIVERY_LIMIT = 20
LEGACY_TTL_MS = 7 * 24 * 3600 * 1000


def legacy_arguments(queue: str) -> dict[str, dict[str, Any]]:
    dead_lettering = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": xq_name(queue),
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    return {
        queue: {**dead_lettering, "x-delivery-limit": LEGACY_DELIVERY_LIMIT},
        dq_name(queue): dead_lettering,
        xq_name(queue): {"x-queue-type": "quorum", "x-message-ttl": LEGACY_TTL_MS},
    }


@pytest.fixture
def channel(settings: Settings) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(settings.rabbitmq_url))
    yield connection.channel()
    if connection.is_open:
        connection.close()


def broker_setup(settings: Settings, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the ``orders-broker-setup`` command for ``settings``' queues, as ``make migrate`` does."""
    environment = {
        **os.environ,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "RABBITMQ_MANAGEMENT_URL": settings.rabbitmq_management_url or "",
        "PLACEMENT_QUEUE": settings.placement_queue,
        **env,
    }
    command = [str(Path(sys.executable).with_name("orders-broker-setup"))]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60, check=False)


def publish(channel: Any, queue: str, body: bytes) -> None:
    channel.basic_publish("", queue, body, pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent))


def dead_letter(channel: Any, settings: Settings) -> tuple[Any, bytes]:
    def taken() -> tuple[Any, bytes] | None:
        """a message reaches the dead-letter queue"""
        method, properties, body = channel.basic_get(xq_name(settings.placement_queue), auto_ack=True)
        return None if method is None else (properties, body)

    result: tuple[Any, bytes] = eventually(taken)
    return result


def deliveries_until_dead_lettered(channel: Any, queue: str) -> Counter[bytes]:
    """Take and hand back every message of ``queue`` until none is left; count each one's deliveries."""
    deliveries: Counter[bytes] = Counter()
    while True:
        method, _properties, body = channel.basic_get(queue)
        if method is None:
            return deliveries
        deliveries[body] += 1
        channel.basic_nack(method.delivery_tag, requeue=True)


def make_legacy(rabbit: RabbitAdmin, channel: Any, settings: Settings) -> None:
    """Replace this test's queues with ones declared the old way, settings as arguments."""
    queue = settings.placement_queue
    rabbit.delete_queues_if_present(queue, dq_name(queue), xq_name(queue))
    for name, arguments in legacy_arguments(queue).items():
        channel.queue_declare(name, durable=True, arguments=arguments)


def test_each_placement_queue_has_only_its_type_as_argument_and_every_setting_from_its_own_policy(
    settings: Settings, rabbit: RabbitAdmin
) -> None:
    for policy in queue_policies(settings.placement_queue):

        def in_effect(policy: Any = policy) -> dict[str, Any] | None:
            """the management API shows the policy in effect (its statistics lag a few seconds)"""
            queue = rabbit.queue(policy.queue)
            return queue if queue.get("effective_policy_definition") else None

        queue = eventually(in_effect)
        assert queue["arguments"] == {"x-queue-type": "quorum"}
        assert queue["durable"] is True
        assert queue["policy"] == policy.name
        assert queue["effective_policy_definition"] == policy.definition


def test_a_message_redelivered_past_the_delivery_limit_is_dead_lettered_not_dropped(
    placements: PlacementPublisher, settings: Settings, channel: Any
) -> None:
    order_id = uuid.uuid4()
    placements.request_placement(order_id)

    # Each hand-back counts as a delivery, as when a worker holding the message dies.
    deliveries = deliveries_until_dead_lettered(channel, settings.placement_queue)

    assert list(deliveries.values()) == [settings.placement_delivery_limit + 1]
    properties, body = dead_letter(channel, settings)
    assert str(order_id).encode() in body
    assert properties.headers["x-first-death-reason"] == "delivery_limit"


@pytest.mark.parametrize("queue_of", [lambda queue: queue, dq_name], ids=["placement queue", "delay queue"])
def test_a_rejected_message_is_dead_lettered(
    settings: Settings, channel: Any, queue_of: Callable[[str], str]
) -> None:
    queue = queue_of(settings.placement_queue)
    publish(channel, queue, b"rejected")
    method = eventually(lambda: channel.basic_get(queue)[0])
    channel.basic_nack(method.delivery_tag, requeue=False)

    properties, body = dead_letter(channel, settings)
    assert body == b"rejected"
    assert properties.headers["x-first-death-reason"] == "rejected"
    assert properties.headers["x-first-death-queue"] == queue


def test_a_full_placement_queue_rejects_publishes_instead_of_dropping_messages(
    placements: PlacementPublisher, settings: Settings, rabbit: RabbitAdmin
) -> None:
    placements.request_placement(uuid.uuid4())
    rabbit.reject_publishes_to(settings.placement_queue)  # a length limit; the overflow is ours
    try:
        with pytest.raises(PublishError, match="nack"):
            placements.request_placement(uuid.uuid4())
    finally:
        rabbit.delete_policy(f"reject-{settings.placement_queue}")


def test_dead_letters_expire_after_the_configured_time(
    settings: Settings, channel: Any, rabbit: RabbitAdmin
) -> None:
    dead_letters = xq_name(settings.placement_queue)
    set_up_placement_queues(settings.model_copy(update={"dead_letter_ttl_ms": 200}))

    def applied() -> bool:
        """the new TTL is in effect on the dead-letter queue"""
        effective = rabbit.queue(dead_letters).get("effective_policy_definition") or {}
        return bool(effective.get("message-ttl") == 200)

    eventually(applied)
    channel.confirm_delivery()
    publish(channel, dead_letters, b"old letter")  # confirmed: it is in the queue

    def expired() -> bool:
        """the dead letter expires"""
        return bool(channel.queue_declare(dead_letters, passive=True).method.message_count == 0)

    eventually(expired, timeout_s=10)


def test_the_setup_command_changes_the_delivery_limit_of_queues_holding_messages_without_a_406(
    settings: Settings, placements: PlacementPublisher, channel: Any, rabbit: RabbitAdmin
) -> None:
    waiting = [uuid.uuid4(), uuid.uuid4()]
    placements.request_placements(waiting)

    done = broker_setup(settings, PLACEMENT_DELIVERY_LIMIT="2")

    assert done.returncode == 0, done.stderr
    assert rabbit.policy(policy_name(settings.placement_queue))["definition"]["delivery-limit"] == 2  # type: ignore[index]
    # The API's publisher, which declares the queues, still publishes to them.
    placements.request_placement(uuid.uuid4())
    deliveries = deliveries_until_dead_lettered(channel, settings.placement_queue)
    assert sorted(deliveries.values()) == [3, 3, 3]  # the new limit, for old and new messages alike
    dead = [dead_letter(channel, settings)[1] for _ in range(3)]
    assert all(any(str(order_id).encode() in body for body in dead) for order_id in waiting)


def test_running_the_setup_again_puts_no_policy(settings: Settings) -> None:
    again = set_up_placement_queues(settings)

    assert again.policies_put == []
    assert again.queues_recreated == []


def test_empty_unconsumed_legacy_queues_are_recreated_under_their_policies(
    settings: Settings, rabbit: RabbitAdmin, channel: Any
) -> None:
    make_legacy(rabbit, channel, settings)

    done = broker_setup(settings)

    assert done.returncode == 0, done.stderr
    for policy in queue_policies(settings.placement_queue):
        assert rabbit.queue(policy.queue)["arguments"] == {"x-queue-type": "quorum"}
    publish(channel, settings.placement_queue, b"after the migration")
    method = eventually(lambda: channel.basic_get(settings.placement_queue)[0])
    channel.basic_nack(method.delivery_tag, requeue=False)
    assert dead_letter(channel, settings)[1] == b"after the migration"


def test_a_legacy_queue_holding_a_message_is_left_as_it_is_with_a_way_to_drain_it(
    settings: Settings, rabbit: RabbitAdmin, channel: Any
) -> None:
    make_legacy(rabbit, channel, settings)
    names = [policy.name for policy in queue_policies(settings.placement_queue)]
    rabbit.delete_policies_if_present(*names)  # as before any setup of this version
    publish(channel, dq_name(settings.placement_queue), b"a retry waiting")

    done = broker_setup(settings)

    assert done.returncode == 1
    assert [rabbit.policy(name) for name in names] == [None] * 3, "a refused migration changes nothing"
    assert "Drain it first" in done.stderr
    assert dq_name(settings.placement_queue) in done.stderr
    for name, arguments in legacy_arguments(settings.placement_queue).items():
        assert rabbit.queue(name)["arguments"] == arguments, "no legacy queue is migrated unless all can be"
    _method, _properties, body = channel.basic_get(dq_name(settings.placement_queue), auto_ack=True)
    assert body == b"a retry waiting"


def test_a_worker_puts_missing_policies_before_it_consumes(
    settings: Settings, rabbit: RabbitAdmin, start_worker: StartWorker
) -> None:
    names = [policy.name for policy in queue_policies(settings.placement_queue)]
    rabbit.delete_policies_if_present(*names)

    start_worker()

    for policy in queue_policies(settings.placement_queue):
        assert rabbit.policy(policy.name)["definition"] == policy.definition  # type: ignore[index]


def test_a_worker_keeps_an_operators_delivery_limit(
    settings: Settings, rabbit: RabbitAdmin, start_worker: StartWorker
) -> None:
    set_up_placement_queues(settings.model_copy(update={"placement_delivery_limit": 5}))

    start_worker()

    assert rabbit.policy(policy_name(settings.placement_queue))["definition"]["delivery-limit"] == 5  # type: ignore[index]


def test_a_worker_refuses_to_start_on_a_policy_without_dead_lettering(
    settings: Settings, rabbit: RabbitAdmin, start_worker: StartWorker
) -> None:
    rabbit.set_policy(
        policy_name(settings.placement_queue),
        f"^{re.escape(settings.placement_queue)}$",
        {"delivery-limit": 20},
    )

    with pytest.raises(QueuesNotReadyError, match="lacks dead-letter-exchange"):
        start_worker()


def test_a_worker_refuses_to_start_on_legacy_queues(
    settings: Settings, rabbit: RabbitAdmin, channel: Any, start_worker: StartWorker
) -> None:
    make_legacy(rabbit, channel, settings)

    with pytest.raises(QueuesNotReadyError, match="run orders-broker-setup"):
        start_worker()


def test_every_client_names_its_connection_after_its_role_host_and_process(
    settings: Settings,
    placements: PlacementPublisher,
    start_worker: StartWorker,
    rabbit: RabbitAdmin,
) -> None:
    placements.request_placement(uuid.uuid4())
    start_worker()
    queue = RabbitDeadLetterQueue(
        settings.rabbitmq_url, settings.placement_queue, connect_timeout_s=settings.connect_timeout_s
    )
    suffix = f" {socket.gethostname()} pid {os.getpid()}"
    wanted = {f"orders-api{suffix}", f"orders-worker{suffix}", f"orders-dead-letters{suffix}"}
    with queue.hold():

        def listed() -> set[str]:
            """the management API lists the API's, the worker's and the dead-letter tool's connections"""
            names = rabbit.connection_names()
            return names if wanted <= names else set()

        eventually(listed)


def test_the_worker_command_exits_with_the_reason_when_the_queues_are_not_safe_to_consume(
    settings: Settings, rabbit: RabbitAdmin, channel: Any
) -> None:
    make_legacy(rabbit, channel, settings)
    environment = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "RABBITMQ_URL": settings.rabbitmq_url,
        "RABBITMQ_MANAGEMENT_URL": settings.rabbitmq_management_url or "",
        "PLACEMENT_QUEUE": settings.placement_queue,
        "WORKER_PROCESSES": "1",
        "WORKER_THREADS": "2",
    }
    command = [str(Path(sys.executable).with_name("orders-workers"))]

    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 3, done.stderr  # Dramatiq's "broker connection failed": a supervisor retries
    assert "run orders-broker-setup" in done.stderr
