"""The partitions' split over the appliers: balanced, agreed by all, and never handed to nobody."""

from __future__ import annotations

from orders_api.execution_feed.partition_assignment import (
    PartitionConsumer,
    assignment,
    consumer_tag,
    partition_consumers,
    partitions_to_give_up,
)

QUEUES = [f"order-executions.{partition}" for partition in range(8)]


def registered_everywhere(active: dict[int, str], waiting: list[str]) -> list[PartitionConsumer]:
    """Consumers as the broker shows them once every applier registered on every partition."""
    return [
        PartitionConsumer(partition, applier, applier == active[partition])
        for partition in range(8)
        for applier in sorted({*active.values(), *waiting})
    ]


def test_the_partitions_are_dealt_so_that_the_counts_differ_by_one_at_most() -> None:
    owners = assignment(["c", "a", "b", "a"], 8)

    assert owners == {0: "a", 1: "b", 2: "c", 3: "a", 4: "b", 5: "c", 6: "a", 7: "b"}
    assert assignment([], 8) == {}


def test_the_first_applier_active_everywhere_gives_up_what_belongs_to_the_others() -> None:
    consumers = registered_everywhere(dict.fromkeys(range(8), "a"), ["b", "c"])

    assert partitions_to_give_up("a", consumers, 8) == [1, 2, 4, 5, 7]
    assert partitions_to_give_up("b", consumers, 8) == []


def test_nothing_moves_once_the_split_is_the_assignment() -> None:
    consumers = registered_everywhere(assignment("abc", 8), [])

    assert [partitions_to_give_up(applier, consumers, 8) for applier in "abc"] == [[], [], []]


def test_a_partition_is_not_given_up_to_an_applier_not_registered_on_it_yet() -> None:
    # "b" has registered on partition 0 only: partition 1, which is its, stays with "a" for now.
    consumers = [PartitionConsumer(p, "a", True) for p in range(8)] + [PartitionConsumer(0, "b", False)]

    assert partitions_to_give_up("a", consumers, 8) == []


def test_the_consumers_of_the_partition_queues_are_read_from_the_management_records() -> None:
    records = [
        {"queue": {"name": QUEUES[3]}, "consumer_tag": consumer_tag("pod-a-1-ab12cd", 3), "active": True},
        {"queue": {"name": QUEUES[3]}, "consumer_tag": consumer_tag("pod/b", 3), "active": False},
        {"queue": {"name": "orders"}, "consumer_tag": consumer_tag("pod-a", 3), "active": True},
        {"queue": {"name": QUEUES[4]}, "consumer_tag": "amq.ctag-someone-else", "active": True},
        {"queue": {"name": QUEUES[5]}, "consumer_tag": consumer_tag("pod-a", 4), "active": True},
    ]

    assert partition_consumers(records, QUEUES) == [
        PartitionConsumer(3, "pod-a-1-ab12cd", True),
        PartitionConsumer(3, "pod/b", False),
    ]
