"""Which applier should own which partition, and which partitions an applier should give up.

RabbitMQ's single active consumer (3.10, quorum queues) keeps one applier per partition and, when
that applier's connection goes, makes the next one registered on the queue active at once. What
it does not do is spread the partitions: the first applier to register is active on all of them
and the others wait. So every applier registers on every partition, and each now and then reads
who consumes the partition queues (the management API, :func:`partition_consumers`) and gives up
the partitions it is active on that :func:`assignment` gives to another registered applier: it
cancels its consumer there and registers again, behind the others, and RabbitMQ hands the
partition on. Every applier computes the same assignment from the same registrations, so the
handovers converge without a coordinator; exclusivity and failover stay RabbitMQ's, which is why
a stale or missing reading can only delay a handover, never let two appliers share a partition.
An applier that is frozen (SIGSTOP, a stalled VM) still counts as registered until the broker
drops its connection after two missed heartbeats: a partition handed to it meanwhile waits that
long, as do those it held when it froze.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

#: Separates the applier's id from the partition in a consumer tag (``<applier>/<partition>``).
TAG_SEPARATOR = "/"


@dataclass(frozen=True)
class PartitionConsumer:
    """One applier's consumer on one partition queue, as the broker last reported it."""

    partition: int
    applier: str
    #: Whether it is the queue's single active consumer (the others wait).
    active: bool


def consumer_tag(applier: str, partition: int) -> str:
    """The consumer tag ``applier`` registers on ``partition`` with, which names both to the others."""
    return f"{applier}{TAG_SEPARATOR}{partition}"


def partition_consumers(
    consumers: Iterable[Mapping[str, Any]], queue_names: Sequence[str]
) -> list[PartitionConsumer]:
    """The appliers' consumers among ``consumers`` (the management API's ``/api/consumers`` records).

    ``queue_names[p]`` is partition ``p``'s queue; consumers of other queues, or with tags that no
    applier gives, are left out.
    """
    partition_of_queue = {name: partition for partition, name in enumerate(queue_names)}
    found = []
    for consumer in consumers:
        partition = partition_of_queue.get(consumer.get("queue", {}).get("name", ""))
        applier, separator, tagged_partition = str(consumer.get("consumer_tag", "")).rpartition(TAG_SEPARATOR)
        if partition is None or not separator or tagged_partition != str(partition):
            continue
        found.append(PartitionConsumer(partition, applier, bool(consumer.get("active"))))
    return found


def assignment(appliers: Iterable[str], partitions: int) -> dict[int, str]:
    """The applier each partition belongs to: dealt round-robin over the appliers' sorted ids.

    Round-robin rather than a hash, so that the counts differ by one at most (8 partitions over
    3 appliers: 3, 3, 2); a join or a leave moves more partitions than a consistent hash would,
    which costs a handover each (about one batch window), not correctness.
    """
    members = sorted(set(appliers))
    if not members:
        return {}
    return {partition: members[partition % len(members)] for partition in range(partitions)}


def partitions_to_give_up(applier: str, consumers: Sequence[PartitionConsumer], partitions: int) -> list[int]:
    """The partitions ``applier`` is active on that belong to another applier registered there.

    Only to one registered on that very partition, so the partition is never given up to nobody
    (an applier still registering, or one already gone whose consumers the reading still shows,
    keeps its turn waiting).
    """
    owners = assignment((consumer.applier for consumer in consumers), partitions)
    registered = {(consumer.partition, consumer.applier) for consumer in consumers}
    return sorted(
        consumer.partition
        for consumer in consumers
        if consumer.applier == applier
        and consumer.active
        and owners[consumer.partition] != applier
        and (consumer.partition, owners[consumer.partition]) in registered
    )
