"""Replaying dead letters with fakes: the order reopened, the request confirmed, then the letter removed.

The fake queue models what the use cases rely on: letters are held while a use case works on
them and stay in the queue unless removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from orders_api.adapters.rabbitmq.confirmed_publisher import PublishError
from orders_api.domain import OrderStatus
from orders_api.service_layer.dead_letters import (
    DeadLetter,
    DeadLetterNotFoundError,
    DeadLetterQueueError,
    NotReplayableError,
    ReplayInterruptedError,
    ReplayOutcome,
    list_dead_letters,
    replay_all_dead_letters,
    replay_dead_letter,
    show_dead_letter,
)
from tests.unit.fakes import T0, FakePlacementRequests, FakeUnitOfWork, make_order

pytestmark = pytest.mark.unit

ERROR = "ValueError: instrument not tradable"


def dead_letter(order_id: uuid.UUID | None, *, message_id: str | None = None) -> DeadLetter:
    return DeadLetter(
        message_id=message_id or str(uuid.uuid4()),
        actor_name="place_order",
        order_id=order_id,
        retries=0,
        dead_lettered_at=T0,
        reason="rejected",
        message={"args": [str(order_id)]},
        receipt=0,
    )


class FakeDeadLetterQueue:
    """Letters in a list; a hold lends them out and :meth:`remove` deletes one for good."""

    def __init__(self, *letters: DeadLetter, events: list[str] | None = None) -> None:
        self.letters = list(letters)
        self.events: list[str] = [] if events is None else events
        #: When set, removing a letter raises this instead.
        self.fail_remove_with: Exception | None = None
        self.holding = False

    @contextmanager
    def hold(self) -> Iterator[FakeDeadLetterQueue]:
        self.events.append("hold")
        self.holding = True
        try:
            yield self
        finally:
            self.holding = False
            self.events.append("release")

    def __iter__(self) -> Iterator[DeadLetter]:
        assert self.holding
        yield from list(self.letters)

    def remove(self, letter: DeadLetter) -> None:
        assert self.holding
        if self.fail_remove_with is not None:
            raise self.fail_remove_with
        self.events.append("remove")
        self.letters.remove(letter)


def test_a_failed_order_is_reopened_its_placement_requested_and_committed_before_its_letter_is_removed() -> (
    None
):
    order = make_order(status=OrderStatus.FAILED, attempts=1, last_error=ERROR)
    uow = FakeUnitOfWork(order)
    letter = dead_letter(order.id)
    queue = FakeDeadLetterQueue(letter, events=uow.events)
    placements = FakePlacementRequests(events=uow.events)

    replay = replay_dead_letter(letter.message_id, queue, lambda: uow, placements)

    assert replay.outcome is ReplayOutcome.REOPENED
    reopened = uow.committed[order.id]
    assert (reopened.status, reopened.attempts, reopened.last_error, reopened.claimed_until) == (
        OrderStatus.PENDING,
        1,
        ERROR,
        None,
    )
    assert placements.requested == [order.id]
    assert queue.letters == []
    assert [e for e in uow.events if e in {"update", "request_placement", "commit", "remove"}] == [
        "update",
        "request_placement",
        "commit",
        "remove",
    ]


def test_an_order_already_placed_only_loses_its_dead_letter() -> None:
    order = make_order(status=OrderStatus.PLACED, placed_at=T0, attempts=2)
    uow = FakeUnitOfWork(order)
    letter = dead_letter(order.id)
    queue = FakeDeadLetterQueue(letter)
    placements = FakePlacementRequests()

    replay = replay_dead_letter(letter.message_id, queue, lambda: uow, placements)

    assert replay.outcome is ReplayOutcome.ALREADY_PLACED
    assert uow.committed[order.id] == order
    assert placements.requested == []
    assert queue.letters == []


def test_an_order_still_pending_gets_a_new_request_and_stays_as_it_is() -> None:
    order = make_order(attempts=3, last_error=ERROR)
    uow = FakeUnitOfWork(order)
    letter = dead_letter(order.id)
    queue = FakeDeadLetterQueue(letter)
    placements = FakePlacementRequests()

    replay = replay_dead_letter(letter.message_id, queue, lambda: uow, placements)

    assert replay.outcome is ReplayOutcome.REQUESTED_AGAIN
    assert uow.committed[order.id] == order
    assert placements.requested == [order.id]
    assert queue.letters == []


def test_a_request_the_broker_does_not_confirm_rolls_back_and_keeps_the_dead_letter() -> None:
    order = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    uow = FakeUnitOfWork(order)
    letter = dead_letter(order.id)
    queue = FakeDeadLetterQueue(letter)

    with pytest.raises(ReplayInterruptedError):
        replay_dead_letter(
            letter.message_id, queue, lambda: uow, FakePlacementRequests(fail_with=PublishError("nack"))
        )

    assert uow.committed[order.id].status is OrderStatus.FAILED
    assert uow.rollbacks == 1
    assert queue.letters == [letter]


def test_a_removal_that_fails_after_the_commit_is_reported_and_a_second_replay_only_asks_again() -> None:
    order = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    uow = FakeUnitOfWork(order)
    letter = dead_letter(order.id)
    queue = FakeDeadLetterQueue(letter)
    queue.fail_remove_with = DeadLetterQueueError("connection lost")
    placements = FakePlacementRequests()

    with pytest.raises(ReplayInterruptedError):
        replay_dead_letter(letter.message_id, queue, lambda: uow, placements)
    queue.fail_remove_with = None
    replay = replay_dead_letter(letter.message_id, queue, lambda: uow, placements)

    assert replay.outcome is ReplayOutcome.REQUESTED_AGAIN
    assert uow.committed[order.id].status is OrderStatus.PENDING
    assert placements.requested == [order.id, order.id]
    assert queue.letters == []


@pytest.mark.parametrize("names_an_id", [True, False], ids=["unknown order", "no order id"])
def test_a_letter_naming_no_existing_order_cannot_be_replayed_and_stays(names_an_id: bool) -> None:
    uow = FakeUnitOfWork()
    letter = dead_letter(uuid.uuid4() if names_an_id else None)
    queue = FakeDeadLetterQueue(letter)
    placements = FakePlacementRequests()

    with pytest.raises(NotReplayableError):
        replay_dead_letter(letter.message_id, queue, lambda: uow, placements)

    assert placements.requested == []
    assert queue.letters == [letter]


def test_an_unknown_message_id_is_not_found_and_nothing_changes() -> None:
    order = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    uow = FakeUnitOfWork(order)
    queue = FakeDeadLetterQueue(dead_letter(order.id))
    placements = FakePlacementRequests()

    with pytest.raises(DeadLetterNotFoundError):
        replay_dead_letter("no-such-message", queue, lambda: uow, placements)
    with pytest.raises(DeadLetterNotFoundError):
        show_dead_letter("no-such-message", queue, lambda: uow)

    assert len(queue.letters) == 1
    assert placements.requested == []
    assert uow.commits == 0


def test_replaying_all_replays_what_it_can_and_leaves_the_rest_in_the_queue() -> None:
    failed = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    placed = make_order(status=OrderStatus.PLACED, placed_at=T0)
    uow = FakeUnitOfWork(failed, placed)
    orphan = dead_letter(uuid.uuid4())
    queue = FakeDeadLetterQueue(dead_letter(failed.id), orphan, dead_letter(placed.id))
    placements = FakePlacementRequests()

    replays = replay_all_dead_letters(queue, lambda: uow, placements)

    assert [replay.outcome for replay in replays] == [
        ReplayOutcome.REOPENED,
        None,
        ReplayOutcome.ALREADY_PLACED,
    ]
    assert replays[1].left_because is not None
    assert queue.letters == [orphan]
    assert placements.requested == [failed.id]
    assert uow.committed[failed.id].status is OrderStatus.PENDING


def test_replaying_all_stops_at_the_first_failure_and_reports_what_was_done() -> None:
    first = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    second = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    uow = FakeUnitOfWork(first, second)
    queue = FakeDeadLetterQueue(dead_letter(first.id), dead_letter(second.id))

    class FailsOnSecond(FakePlacementRequests):
        def request_placement(self, order_id: uuid.UUID) -> None:
            if order_id == second.id:
                raise PublishError("nack")
            super().request_placement(order_id)

    with pytest.raises(ReplayInterruptedError) as raised:
        replay_all_dead_letters(queue, lambda: uow, FailsOnSecond())

    assert [replay.letter.order_id for replay in raised.value.done] == [first.id]
    assert [letter.order_id for letter in queue.letters] == [second.id]
    assert uow.committed[second.id].status is OrderStatus.FAILED


def test_listing_shows_every_letter_with_its_order_and_hands_them_all_back() -> None:
    order = make_order(status=OrderStatus.FAILED, last_error=ERROR)
    uow = FakeUnitOfWork(order)
    letters = [dead_letter(order.id), dead_letter(None)]
    queue = FakeDeadLetterQueue(*letters)

    reports = list_dead_letters(queue, lambda: uow)

    assert [(report.letter, report.order) for report in reports] == [(letters[0], order), (letters[1], None)]
    assert queue.letters == letters
    assert not queue.holding


def test_reopening_keeps_the_record_of_the_failure_and_clears_the_claim_and_abandoned_count() -> None:
    order = make_order(status=OrderStatus.FAILED, attempts=4, last_error=ERROR, abandoned_claims=3)

    reopened = order.reopened()

    assert reopened.status is OrderStatus.PENDING
    assert (reopened.attempts, reopened.last_error) == (4, ERROR)
    assert (reopened.claimed_until, reopened.abandoned_claims) == (None, 0)


@pytest.mark.parametrize("status", [OrderStatus.PENDING, OrderStatus.PLACED])
def test_only_a_failed_order_can_be_reopened(status: OrderStatus) -> None:
    order = make_order(status=status, placed_at=T0 if status is OrderStatus.PLACED else None)

    assert order.reopened() == order
