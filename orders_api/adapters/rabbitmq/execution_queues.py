"""The execution-report queues: one per partition, so that the reports of one order stay in order.

The ingestor publishes each report of the exchange's feed to the partition of its order
(:func:`partition_of`); each partition is a quorum queue with a single active consumer, so one
applier at a time takes a partition's reports, in the order they were confirmed, while the
partitions spread the load over several appliers. The ingestor and the appliers both declare the
queues through :func:`execution_queue_declarations`, since RabbitMQ refuses (406) a declaration
whose arguments differ from the existing queue's, and both read the queues' prefix and count
through one piece of settings (:class:`~orders_api.settings.executions.ExecutionQueueSettings`).
"""

from __future__ import annotations

import uuid
import zlib

from orders_api.adapters.rabbitmq.confirmed_publisher import QueueDeclaration


def partition_queue(prefix: str, partition: int) -> str:
    """The name of partition ``partition``'s queue."""
    return f"{prefix}.{partition}"


def partition_of(order_id: uuid.UUID, partitions: int) -> int:
    """The partition every report of ``order_id`` goes to: stable across processes and releases.

    CRC-32 of the id's bytes, not Python's ``hash``, which is salted per process.
    """
    return zlib.crc32(order_id.bytes) % partitions


def execution_queue_declarations(prefix: str, partitions: int) -> tuple[QueueDeclaration, ...]:
    """Every partition's queue: durable quorum queues, one active consumer each."""
    return tuple(
        QueueDeclaration(
            partition_queue(prefix, partition),
            {"x-queue-type": "quorum", "x-single-active-consumer": True},
        )
        for partition in range(partitions)
    )
