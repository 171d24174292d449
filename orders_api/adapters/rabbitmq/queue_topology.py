"""Setting up the placement queues: their policies through the management API, the queues over AMQP.

The queues carry only their type as an argument; everything an operator may want to change
(delivery limit, dead-lettering, overflow, the dead letters' TTL) is in one policy per queue
(:func:`orders_api.adapters.rabbitmq.placement_queue.queue_policies`), which RabbitMQ applies to a live
queue, messages and all. Policies are put before the queues are declared: a queue created under
a policy has it from its first message, whereas a policy put on an existing queue reaches it a
moment later.

Queues declared by earlier versions, with those settings as arguments ("legacy" queues), make
the new declaration fail (406). :func:`set_up_placement_queues` recreates such a queue only when
it is empty and nobody consumes from it, and otherwise stops, saying how to drain it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorException

from orders_api.adapters.rabbitmq.connections import blocking_connection
from orders_api.adapters.rabbitmq.management import (
    ManagementError,
    RabbitManagement,
    management_nodes,
    vhost_of,
)
from orders_api.adapters.rabbitmq.placement_queue import (
    QUEUE_ARGUMENTS,
    QueuePolicy,
    queue_declarations,
    queue_policies,
)
from orders_api.settings.shared import Settings

logger = logging.getLogger(__name__)

#: Seconds any one request to the management API may take.
MANAGEMENT_TIMEOUT_S = 10.0
#: Policy keys whose value the workers need exactly as the service sets them: without them a
#: message the workers give up on would be dropped instead of dead-lettered. The other keys
#: (delivery limit, TTL) must be present, but their values are the operator's to choose.
SAFETY_KEYS = frozenset(
    {"dead-letter-exchange", "dead-letter-routing-key", "dead-letter-strategy", "overflow"}
)

_BROKER_ERRORS = (pika.exceptions.AMQPError, OSError, AMQPConnectorException)


class TopologyError(Exception):
    """The placement queues cannot be set up (or are not) as the service needs; the message says why."""


@dataclass
class SetupReport:
    """What :func:`set_up_placement_queues` changed, for its log line and for tests."""

    #: Policies created or given a new definition.
    policies_put: list[str] = field(default_factory=list)
    #: Legacy queues, empty and unconsumed, deleted and declared anew.
    queues_recreated: list[str] = field(default_factory=list)


def management_for(settings: Settings) -> RabbitManagement:
    """A management API client for the vhost of ``settings.rabbitmq_url``."""
    return RabbitManagement(
        management_nodes(settings.rabbitmq_url, settings.rabbitmq_management_url),
        vhost_of(settings.rabbitmq_url),
        timeout_s=MANAGEMENT_TIMEOUT_S,
    )


def policies_for(settings: Settings) -> tuple[QueuePolicy, ...]:
    """The placement queues' policies with ``settings``' delivery limit and dead-letter TTL."""
    return queue_policies(
        settings.placement_queue,
        delivery_limit=settings.placement_delivery_limit,
        dead_letter_ttl_ms=settings.dead_letter_ttl_ms,
    )


def set_up_placement_queues(settings: Settings, *, role: str = "orders-broker-setup") -> SetupReport:
    """Put the placement queues' policies and declare the queues, idempotently; return what changed.

    Changing a setting (say ``PLACEMENT_DELIVERY_LIMIT``) and running this again updates the
    policy, which RabbitMQ applies to the existing queues and their messages: nothing is
    deleted. A legacy queue is recreated only if empty and unconsumed.

    :raises TopologyError: a legacy queue holds messages or has consumers, or a broker
        or its management API cannot be reached or refuses.
    """
    report = SetupReport()
    management = management_for(settings)
    try:
        with _channel(settings, role) as channel:
            legacy = [name for name in _queue_names(settings) if _is_legacy(management.queue(name))]
            # Every legacy queue is checked before anything changes: all are migrated, or none.
            for name in legacy:
                _refuse_unless_idle(channel, management, name)
            for policy in policies_for(settings):
                if _put_if_changed(management, policy):
                    report.policies_put.append(policy.name)
            for name in legacy:
                _delete_legacy(channel, name)
                report.queues_recreated.append(name)
            # After the policies: a queue created under its policy has it from its first message.
            for declaration in queue_declarations(settings.placement_queue):
                channel.queue_declare(declaration.name, durable=True, arguments=declaration.arguments)
    except ManagementError as error:
        raise TopologyError(f"RabbitMQ's management API: {error}") from error
    except _BROKER_ERRORS as error:
        raise TopologyError(f"setting up the placement queues failed: {error!r}") from error
    finally:
        management.close()
    return report


def ensure_policies(settings: Settings) -> list[str]:
    """Check, before consuming, that every placement queue is under a policy that dead-letters.

    A missing policy is put (it is safe to add; an operator's changes to an existing one are
    kept), and its name returned. The workers call this at boot: a worker consuming without
    the policies would drop the messages it gives up on, since Dramatiq rejects them without
    requeueing and only a dead-letter exchange saves them.

    :raises TopologyError: a queue is a legacy one (run ``orders-broker-setup``), a policy
        lacks what dead-lettering needs, or the management API cannot be reached or refuses.
    """
    management = management_for(settings)
    created = []
    try:
        for name in _queue_names(settings):
            if _is_legacy(management.queue(name)):
                raise TopologyError(
                    f"queue {name!r} in vhost {management.vhost!r} was declared by an older version, with "
                    "its settings as arguments; run orders-broker-setup, which says how to migrate it"
                )
        for policy in policies_for(settings):
            existing = management.policy(policy.name)
            if existing is None:
                management.put_policy(policy.name, policy.body())
                created.append(policy.name)
                continue
            problem = _unsafe(existing, policy)
            if problem:
                raise TopologyError(
                    f"policy {policy.name!r} in vhost {management.vhost!r} {problem}; "
                    "run orders-broker-setup to put it back"
                )
    except ManagementError as error:
        raise TopologyError(f"RabbitMQ's management API: {error}") from error
    finally:
        management.close()
    return created


def _queue_names(settings: Settings) -> list[str]:
    return [declaration.name for declaration in queue_declarations(settings.placement_queue)]


def _is_legacy(queue: dict[str, Any] | None) -> bool:
    """Whether ``queue`` exists with arguments other than the type alone: a new declaration would fail."""
    return queue is not None and queue.get("arguments", {}) != QUEUE_ARGUMENTS


def _put_if_changed(management: RabbitManagement, policy: QueuePolicy) -> bool:
    """Put ``policy`` unless the vhost already has it word for word; return whether it was put."""
    existing = management.policy(policy.name)
    wanted = policy.body()
    if existing is not None and all(existing.get(key) == value for key, value in wanted.items()):
        return False
    management.put_policy(policy.name, wanted)
    logger.info("policy %s on %s: %s", policy.name, policy.pattern, policy.definition)
    return True


def _unsafe(existing: dict[str, Any], policy: QueuePolicy) -> str | None:
    """Why ``existing`` cannot stand in for ``policy``, or ``None`` if it can."""
    if existing.get("pattern") != policy.pattern or existing.get("apply-to") not in ("queues", "all"):
        return f"does not apply to queue {policy.queue!r} alone (pattern {existing.get('pattern')!r})"
    definition = existing.get("definition", {})
    missing = sorted(set(policy.definition) - set(definition))
    if missing:
        return f"lacks {', '.join(missing)}"
    wrong = sorted(
        key for key in SAFETY_KEYS & set(policy.definition) if definition[key] != policy.definition[key]
    )
    if wrong:
        return (
            f"sets {', '.join(f'{key}={definition[key]!r}' for key in wrong)}, not what dead-lettering needs"
        )
    return None


@contextmanager
def _channel(settings: Settings, role: str) -> Iterator[BlockingChannel]:
    """A channel on a connection of the setup's own, named after ``role``, closed at the end."""
    try:
        connection = blocking_connection(
            settings.rabbitmq_url, role=role, connect_timeout_s=settings.connect_timeout_s
        )
    except _BROKER_ERRORS as error:
        raise TopologyError(f"cannot connect to RabbitMQ: {error!r}") from error
    try:
        yield connection.channel()
    finally:
        if connection.is_open:
            connection.close()


def _refuse_unless_idle(channel: BlockingChannel, management: RabbitManagement, name: str) -> None:
    """Stop, saying how to drain it, unless legacy queue ``name`` holds nothing and nobody consumes it.

    RabbitMQ 3.10 refuses ``if-empty`` and ``if-unused`` deletes of quorum queues (540), so the
    check and the delete are two steps: the counts are read live over AMQP (ready messages and
    consumers; a message held by ``basic.get`` counts as a consumer) and from the management
    API (unacknowledged messages too, a few seconds late). The command is therefore to be run
    with the API and the workers stopped, so that nothing publishes in between.
    """
    declared = channel.queue_declare(name, passive=True).method
    stats = management.queue(name) or {}
    ready = int(declared.message_count)
    held = int(stats.get("messages", 0) or 0)  # ready and unacknowledged
    consumers = max(int(declared.consumer_count), int(stats.get("consumers", 0) or 0))
    if ready or held or consumers:
        raise TopologyError(
            f"queue {name!r} in vhost {management.vhost!r} was declared by an older version (arguments "
            f"{stats.get('arguments')}) and holds {max(ready, held)} messages with {consumers} consumers; "
            "migrating it now would lose them. Drain it first: stop the API (nothing may publish), "
            "let the old workers consume it empty (for a .XQ queue: replay or remove its dead letters "
            "with `flask --app orders_api.wsgi dead-letters`, from the old version), stop the workers, "
            "then run orders-broker-setup again."
        )


def _delete_legacy(channel: BlockingChannel, name: str) -> None:
    """Delete legacy queue ``name``, found idle; it is declared anew, under its policy, right after."""
    removed = int(channel.queue_delete(name).method.message_count)
    if removed:
        # Published between the check and the delete: the API was not stopped. A placement
        # request's order is still pending in the database, and the reconciliation sweep
        # republishes it once RECONCILE_STALE_AFTER_S has passed.
        logger.error(
            "legacy queue %s received %d messages during its migration; they were deleted", name, removed
        )
    logger.warning("recreating legacy queue %s (it was empty and unconsumed) without its old arguments", name)
