"""The worker's side of an order: claim it, call the exchange once, record what happened.

Dramatiq delivers at least once, so the same order id can arrive twice, or arrive for an order
that never committed; these tests pin down the state each delivery leaves behind and whether
it reached the exchange. The clock is a fake that moves only when a test moves it.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from exchange_simulator.stock_exchange import OrderPlacementError
from orders_api.domain import ClaimHeldError, Order, OrderStatus
from orders_api.service_layer.claims import ClaimKeeper
from orders_api.service_layer.placement import (
    ExchangeAnswer,
    OrderAlreadyFailedError,
    PlacementOutcome,
    UnloadableOrderError,
    mark_failed,
    note_still_waiting,
    parse_order_id,
    place_on_exchange,
    record_answer,
)
from tests.unit.fakes import T0, FakeClock, FakeExchange, FakeUnitOfWork, make_order, seasoned_claims

pytestmark = pytest.mark.unit

LEASE = timedelta(seconds=60)
UNAVAILABLE = "Failed to place order at stock exchange. Connection not available"


def place(
    order_id: uuid.UUID, uow: FakeUnitOfWork, exchange: FakeExchange, clock: FakeClock
) -> PlacementOutcome:
    """Handle one delivery of the placement message for ``order_id``; ``clock`` is the database's too."""
    uow.repository.clock = clock
    return place_on_exchange(order_id, uow, exchange, claims=seasoned_claims(clock, LEASE), now=clock)


def commit_elsewhere(uow: FakeUnitOfWork, order: Order) -> None:
    """What a concurrent transaction that committed ``order`` leaves: visible now, and after."""
    uow.committed[order.id] = order
    uow.repository.rows[order.id] = order


def outage() -> OrderPlacementError:
    """The error the exchange raises when its connection is not available."""
    return OrderPlacementError(UNAVAILABLE)


# Placing a pending order


def test_places_a_pending_order_and_records_it_as_placed() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)

    outcome = place(order.id, uow, FakeExchange(), FakeClock(T0))

    assert outcome is PlacementOutcome.PLACED
    stored = uow.committed[order.id]
    assert stored.status is OrderStatus.PLACED
    assert stored.placed_at == T0
    assert stored.attempts == 1
    assert stored.claimed_until is None
    assert stored.last_error is None


def test_calls_the_exchange_once_with_the_whole_order() -> None:
    order = make_order()
    exchange = FakeExchange()

    place(order.id, FakeUnitOfWork(order), exchange, FakeClock(T0))

    assert len(exchange.orders) == 1
    sent = exchange.orders[0]
    assert sent.id == order.id
    assert sent.created_at == order.created_at
    assert sent.type is order.type
    assert sent.side is order.side
    assert sent.instrument == order.instrument
    assert sent.limit_price == order.limit_price
    assert sent.quantity == order.quantity


def test_records_as_placed_at_the_time_the_exchange_returned() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    exchange = FakeExchange(during_call=lambda _: clock.advance(timedelta(seconds=0.5)))

    place(order.id, uow, exchange, clock)

    assert uow.committed[order.id].placed_at == T0 + timedelta(seconds=0.5)


def test_commits_the_claim_before_calling_the_exchange_and_calls_it_outside_any_transaction() -> None:
    # A committed claim is what a concurrent delivery sees; a transaction held open across a
    # half-second exchange call would hold the row lock and a pooled connection all that time.
    order = make_order()
    uow = FakeUnitOfWork(order)
    seen: list[tuple[bool, Order]] = []
    exchange = FakeExchange(during_call=lambda _: seen.append((uow.in_transaction, uow.committed[order.id])))

    place(order.id, uow, exchange, FakeClock(T0))

    [(in_transaction, committed_during_call)] = seen
    assert in_transaction is False
    assert committed_during_call.claimed_until == T0 + LEASE
    assert committed_during_call.attempts == 1
    assert committed_during_call.status is OrderStatus.PENDING


def test_claims_a_committed_order_without_waiting_on_its_creation_lock() -> None:
    # A row the worker can see was committed, so its creating transaction has ended: the wait
    # on the creation lock would only cost a round trip.
    order = make_order()
    uow = FakeUnitOfWork(order)

    place(order.id, uow, FakeExchange(), FakeClock(T0))

    assert uow.events[:3] == ["begin", "get", "compare_and_set"]
    assert uow.repository.waited_for == []


def test_a_placement_reads_the_order_once_and_writes_it_twice_when_nothing_interferes() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)

    place(order.id, uow, FakeExchange(), FakeClock(T0))

    statements = [event for event in uow.events if event in {"get", "compare_and_set", "update"}]
    assert statements == ["get", "compare_and_set", "compare_and_set"]


def test_a_claim_that_loses_a_race_reads_the_order_again_and_finds_the_other_claim() -> None:
    # Between this delivery's read and its write another delivery claims the order: the
    # compare-and-set finds the order changed and the decision is taken again on the new state.
    order = make_order()
    uow = FakeUnitOfWork(order)
    rival = order.claim(T0, LEASE)
    uow.repository.before_next_compare_and_set = lambda: commit_elsewhere(uow, rival)
    exchange = FakeExchange()

    with pytest.raises(ClaimHeldError):
        place(order.id, uow, exchange, FakeClock(T0))

    assert exchange.orders == []
    assert uow.committed[order.id] == rival


def test_a_placement_recorded_over_a_changed_order_is_applied_to_the_order_as_it_now_is() -> None:
    # While the exchange answered, the sweep's touch or an operator changed the stored order:
    # the write computed from the claim fails, and ``placed`` is applied to the fresh read.
    order = make_order()
    uow = FakeUnitOfWork(order)
    exchange = FakeExchange()
    clock = FakeClock(T0)

    def someone_else_records_an_error() -> None:
        commit_elsewhere(uow, replace(uow.committed[order.id], last_error="noted by someone else"))

    exchange.during_call = lambda _: setattr(
        uow.repository, "before_next_compare_and_set", someone_else_records_an_error
    )

    outcome = place(order.id, uow, exchange, clock)

    assert outcome is PlacementOutcome.PLACED
    stored = uow.committed[order.id]
    assert stored.status is OrderStatus.PLACED
    assert stored.last_error is None
    assert [event for event in uow.events if event in {"get", "compare_and_set"}] == [
        "get",
        "compare_and_set",
        "compare_and_set",
        "get",
        "compare_and_set",
    ]


def test_places_an_order_whose_previous_claim_has_expired() -> None:
    order = make_order(attempts=1, claimed_until=T0 - timedelta(seconds=1))
    uow = FakeUnitOfWork(order)
    exchange = FakeExchange()

    outcome = place(order.id, uow, exchange, FakeClock(T0))

    assert outcome is PlacementOutcome.PLACED
    assert uow.committed[order.id].status is OrderStatus.PLACED
    assert uow.committed[order.id].attempts == 2
    assert uow.committed[order.id].claimed_until is None
    assert [sent.id for sent in exchange.orders] == [order.id]


def test_a_message_for_an_order_being_reopened_waits_for_the_replay_and_places_it() -> None:
    # An operator's replay holds the failed order's row lock, reopening it, and has published
    # its message before committing: the first read sees ``failed``, the locked read the reopening.
    order = make_order(status=OrderStatus.FAILED, attempts=1, last_error=UNAVAILABLE)
    uow = FakeUnitOfWork(order)
    uow.repository.before_next_lock = lambda: commit_elsewhere(uow, order.reopened())
    exchange = FakeExchange()

    outcome = place(order.id, uow, exchange, FakeClock(T0))

    assert outcome is PlacementOutcome.PLACED
    assert uow.committed[order.id].status is OrderStatus.PLACED
    assert [sent.id for sent in exchange.orders] == [order.id]


# Deliveries with nothing to do


def test_drops_a_message_for_an_order_that_never_committed_without_calling_the_exchange() -> None:
    order_id = uuid.uuid4()
    uow = FakeUnitOfWork(make_order())
    exchange = FakeExchange()

    outcome = place(order_id, uow, exchange, FakeClock(T0))

    assert outcome is PlacementOutcome.ORPHAN_DROPPED
    assert exchange.orders == []
    assert uow.repository.waited_for == [order_id]
    # Not found, it waits for a creating transaction that may still be open, then looks again.
    assert uow.events[1:4] == ["get", "wait_for_creation", "get"]
    assert order_id not in uow.committed
    # Only on a primary (a standby in recovery raises), where no commit can still be hidden.
    assert uow.events[4] == "durability barrier"


def test_ignores_a_repeated_message_for_a_placed_order() -> None:
    order = make_order(status=OrderStatus.PLACED, attempts=1, placed_at=T0)
    uow = FakeUnitOfWork(order)
    exchange = FakeExchange()

    outcome = place(order.id, uow, exchange, FakeClock(T0 + timedelta(minutes=5)))

    assert outcome is PlacementOutcome.ALREADY_PLACED
    assert exchange.orders == []
    assert uow.committed[order.id] == order
    assert uow.events.count("durability barrier") == 1  # what it read is durable before it acts on it


def test_a_repeated_message_for_a_failed_order_is_refused_so_that_it_is_dead_lettered_again() -> None:
    order = make_order(status=OrderStatus.FAILED, attempts=1, last_error="ValueError: bad")
    uow = FakeUnitOfWork(order)
    exchange = FakeExchange()

    with pytest.raises(OrderAlreadyFailedError):
        place(order.id, uow, exchange, FakeClock(T0 + timedelta(minutes=5)))

    assert exchange.orders == []
    assert uow.committed[order.id] == order
    assert uow.events.count("durability barrier") == 1  # what it read is durable before it acts on it


def test_refuses_an_order_under_a_live_claim_without_calling_the_exchange() -> None:
    order = make_order().claim(T0, LEASE)
    uow = FakeUnitOfWork(order)
    exchange = FakeExchange()

    with pytest.raises(ClaimHeldError) as excinfo:
        place(order.id, uow, exchange, FakeClock(T0 + timedelta(seconds=15)))

    assert excinfo.value.retry_after == timedelta(seconds=45)
    assert exchange.orders == []
    assert uow.committed[order.id] == order
    assert uow.commits == 0


def test_a_second_delivery_while_the_first_is_in_flight_never_reaches_the_exchange() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    refusals: list[ClaimHeldError] = []

    def redeliver(_: Order) -> None:
        try:
            place(order.id, uow, exchange, clock)
        except ClaimHeldError as held:
            refusals.append(held)

    exchange = FakeExchange(during_call=redeliver)

    outcome = place(order.id, uow, exchange, clock)

    assert outcome is PlacementOutcome.PLACED
    assert len(exchange.orders) == 1
    assert [held.retry_after for held in refusals] == [LEASE]
    assert uow.committed[order.id].status is OrderStatus.PLACED
    assert uow.committed[order.id].attempts == 1


# An exchange that fails


def test_an_unavailable_exchange_is_reraised_with_the_claim_released_and_the_error_recorded() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    failure = outage()

    with pytest.raises(OrderPlacementError) as excinfo:
        place(order.id, uow, FakeExchange(failures=[failure]), FakeClock(T0))

    assert excinfo.value is failure
    stored = uow.committed[order.id]
    assert stored.status is OrderStatus.PENDING
    assert stored.claimed_until is None
    assert stored.attempts == 1
    assert stored.placed_at is None
    assert stored.last_error == f"OrderPlacementError: {UNAVAILABLE}"


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(RuntimeError("socket closed"), id="RuntimeError"),
        pytest.param(TimeoutError("no answer"), id="TimeoutError"),
    ],
)
def test_any_error_from_the_exchange_releases_the_claim_so_a_retry_need_not_wait_out_the_lease(
    error: Exception,
) -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)

    with pytest.raises(type(error)):
        place(order.id, uow, FakeExchange(failures=[error]), FakeClock(T0))

    assert uow.committed[order.id].claimed_until is None
    assert uow.committed[order.id].last_error == f"{type(error).__name__}: {error}"


def test_the_retry_after_an_unavailable_exchange_places_the_order_on_the_second_attempt() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    exchange = FakeExchange(failures=[outage()])
    with pytest.raises(OrderPlacementError):
        place(order.id, uow, exchange, clock)
    clock.advance(timedelta(seconds=1))

    outcome = place(order.id, uow, exchange, clock)

    assert outcome is PlacementOutcome.PLACED
    stored = uow.committed[order.id]
    assert stored.status is OrderStatus.PLACED
    assert stored.attempts == 2
    assert stored.placed_at == T0 + timedelta(seconds=1)
    assert stored.last_error is None
    assert len(exchange.orders) == 2


def test_a_late_failure_after_the_lease_expired_does_not_undo_a_placement_made_meanwhile() -> None:
    # The first delivery's exchange call outlives its lease; a second delivery takes the order
    # over and places it; then the first call fails. The order must stay placed, or a retry of
    # the first message would place it on the exchange a third time.
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    calls = 0

    def stall_then_fail(_: Order) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            clock.advance(LEASE + timedelta(seconds=1))
            place(order.id, uow, exchange, clock)
            raise outage()

    exchange = FakeExchange(during_call=stall_then_fail)

    with pytest.raises(OrderPlacementError):
        place(order.id, uow, exchange, clock)

    assert uow.committed[order.id].status is OrderStatus.PLACED
    assert uow.committed[order.id].attempts == 2


# Giving up


def test_mark_failed_fails_a_pending_order_with_the_error_that_ended_it() -> None:
    order = make_order(attempts=30, last_error=f"OrderPlacementError: {UNAVAILABLE}")
    uow = FakeUnitOfWork(order)

    failed = mark_failed(order.id, uow, outage())

    assert failed is True
    stored = uow.committed[order.id]
    assert stored.status is OrderStatus.FAILED
    assert stored.last_error == f"OrderPlacementError: {UNAVAILABLE}"
    assert stored.claimed_until is None
    assert stored.placed_at is None
    assert stored.attempts == 30


def test_mark_failed_records_the_error_that_ended_the_order_rather_than_an_earlier_one() -> None:
    order = make_order(attempts=1, last_error="TimeoutError: earlier")
    uow = FakeUnitOfWork(order)

    mark_failed(order.id, uow, ValueError("No order given to place at the stock exchange"))

    assert uow.committed[order.id].last_error == "ValueError: No order given to place at the stock exchange"


def test_mark_failed_leaves_a_placed_order_placed() -> None:
    order = make_order(status=OrderStatus.PLACED, placed_at=T0, attempts=1)
    uow = FakeUnitOfWork(order)

    failed = mark_failed(order.id, uow, outage())

    assert failed is False
    assert uow.committed[order.id] == order
    assert uow.events.count("durability barrier") == 1  # what it read is durable before it acts on it


def test_mark_failed_leaves_an_already_failed_order_and_its_first_error_alone() -> None:
    order = make_order(status=OrderStatus.FAILED, attempts=31, last_error="OrderPlacementError: first")
    uow = FakeUnitOfWork(order)

    failed = mark_failed(order.id, uow, RuntimeError("second"))

    assert failed is False
    assert uow.committed[order.id] == order


def test_mark_failed_leaves_an_order_under_another_deliverys_live_claim_to_it() -> None:
    order = make_order(attempts=1).claim(T0, LEASE)
    uow = FakeUnitOfWork(order)

    uow.repository.clock = FakeClock(T0)

    with pytest.raises(ClaimHeldError):
        mark_failed(order.id, uow, outage())

    assert uow.committed[order.id] == order


def test_mark_failed_reports_false_for_an_unknown_order_and_creates_nothing() -> None:
    uow = FakeUnitOfWork()

    failed = mark_failed(uuid.uuid4(), uow, outage())

    assert failed is False
    assert uow.committed == {}


# Reading the message


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f", id="canonical string"),
        pytest.param("6F1C2D3E-4B5A-4C7D-8E9F-0A1B2C3D4E5F", id="upper case string"),
        pytest.param(uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"), id="UUID object"),
    ],
)
def test_parse_order_id_reads_the_id_a_message_carries(raw: object) -> None:
    assert parse_order_id(raw) == uuid.UUID("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("not-a-uuid", id="words"),
        pytest.param("", id="empty string"),
        pytest.param("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5", id="one digit short"),
        pytest.param("6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5g", id="non-hex digit"),
        pytest.param(None, id="None"),
        pytest.param(42, id="integer"),
        pytest.param({"order_id": "6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"}, id="mapping"),
    ],
)
def test_parse_order_id_rejects_a_message_without_a_valid_id_as_unloadable(raw: object) -> None:
    with pytest.raises(UnloadableOrderError, match="no valid order id") as excinfo:
        parse_order_id(raw)

    assert repr(raw) in str(excinfo.value)
    assert isinstance(excinfo.value.__cause__, ValueError)


# Recording a placement while the database is briefly away


class DatabaseAwayAfterTheCall:
    """An exchange that accepts the order, after which the database refuses commits for a while."""

    def __init__(self, uow: FakeUnitOfWork, clock: FakeClock, away_for_sleeps: int | None) -> None:
        self.uow = uow
        self.clock = clock
        self.remaining = away_for_sleeps
        self.sleeps: list[float] = []

    def exchange(self, order: Order) -> None:
        self.uow.fail_commit_with = RuntimeError("database unavailable")

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(timedelta(seconds=seconds))
        if self.remaining is not None:
            self.remaining -= 1
            if self.remaining == 0:
                self.uow.fail_commit_with = None


def test_a_placement_is_recorded_once_the_database_is_back() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    away = DatabaseAwayAfterTheCall(uow, clock, away_for_sleeps=3)

    outcome = place_on_exchange(
        order.id, uow, away.exchange, claims=seasoned_claims(clock, LEASE), now=clock, sleep=away.sleep
    )

    assert outcome is PlacementOutcome.PLACED
    assert uow.committed[order.id].status is OrderStatus.PLACED
    assert away.sleeps == [0.1, 0.2, 0.4]


def test_recording_a_placement_goes_on_however_long_the_database_is_away_with_the_claim_held() -> None:
    # Giving up would leave the claim to expire, and another delivery would call the exchange
    # again: the answer is recorded whenever the database comes back, and the claim is renewed
    # meanwhile by the process that holds it.
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    claims = seasoned_claims(clock, LEASE)
    away = DatabaseAwayAfterTheCall(uow, clock, away_for_sleeps=100)
    held_while_away: list[bool] = []
    sleep = away.sleep

    def sleep_and_look(seconds: float) -> None:
        held_while_away.append(order.id in claims.held)
        sleep(seconds)

    outcome = place_on_exchange(order.id, uow, away.exchange, claims=claims, now=clock, sleep=sleep_and_look)

    assert outcome is PlacementOutcome.PLACED
    assert clock.current - T0 > 2 * LEASE
    assert all(held_while_away)
    assert uow.committed[order.id].placed_at == T0
    assert order.id not in claims.held


def test_a_refusal_is_recorded_however_long_the_database_is_away_and_the_claim_then_released() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    away = DatabaseAwayAfterTheCall(uow, clock, away_for_sleeps=40)

    def refuse(claimed: Order) -> None:
        away.exchange(claimed)
        raise outage()

    with pytest.raises(OrderPlacementError):
        place_on_exchange(
            order.id, uow, refuse, claims=seasoned_claims(clock, LEASE), now=clock, sleep=away.sleep
        )

    stored = uow.committed[order.id]
    assert stored.status is OrderStatus.PENDING
    assert stored.claimed_until is None
    assert stored.last_error == f"OrderPlacementError: {UNAVAILABLE}"


def test_an_expired_claim_is_left_alone_by_a_process_that_has_not_yet_seen_the_database_for_a_lease() -> None:
    order = make_order(claimed_until=T0 - timedelta(seconds=1), attempts=1)
    uow = FakeUnitOfWork(order)
    exchange = FakeExchange()
    just_back = ClaimKeeper(FakeUnitOfWork, LEASE, now=FakeClock(T0))
    just_back.renew()

    with pytest.raises(ClaimHeldError):
        place_on_exchange(order.id, uow, exchange, claims=just_back, now=FakeClock(T0))

    assert exchange.orders == []
    assert uow.committed[order.id] == order


def test_a_pending_order_whose_message_waits_for_the_exchange_is_touched_so_the_sweep_leaves_it() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    uow.repository.stale.add(order.id)

    note_still_waiting(order.id, uow)

    assert order.id not in uow.repository.stale
    assert uow.committed[order.id] == order


def test_a_settled_order_is_not_touched_by_a_waiting_message() -> None:
    order = replace(make_order(), status=OrderStatus.PLACED, placed_at=T0)
    uow = FakeUnitOfWork(order)

    note_still_waiting(order.id, uow)

    assert "compare_and_set" not in uow.repository.events


def test_a_holder_paused_inside_the_call_while_its_claim_was_taken_over_counts_the_second_placement() -> None:
    # Both calls reached the exchange: nothing can undo that, but the order says so, and the
    # second delivery to record its placement reports it.
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    calls = 0
    outcomes: list[PlacementOutcome] = []

    def paused_inside_the_first_call(_: Order) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            clock.advance(LEASE + timedelta(seconds=1))
            outcomes.append(place(order.id, uow, exchange, clock))

    exchange = FakeExchange(during_call=paused_inside_the_first_call)

    outcomes.append(place(order.id, uow, exchange, clock))

    assert outcomes == [PlacementOutcome.PLACED, PlacementOutcome.PLACED_AGAIN]
    stored = uow.committed[order.id]
    assert (stored.placed_attempt, stored.duplicate_attempts) == (2, (1,))


def test_claims_are_judged_on_the_databases_clock_not_the_workers() -> None:
    # The worker's clock runs a minute ahead: by it the other delivery's claim ran out long ago.
    order = make_order(attempts=1).claim(T0, LEASE)
    uow = FakeUnitOfWork(order)
    uow.repository.clock = FakeClock(T0 + timedelta(seconds=1))
    ahead = FakeClock(T0 + timedelta(minutes=1) + LEASE)

    with pytest.raises(ClaimHeldError):
        place_on_exchange(order.id, uow, FakeExchange(), claims=seasoned_claims(ahead, LEASE), now=ahead)

    assert uow.committed[order.id] == order


# Handing an answer the database cannot take to the courier


class Courier:
    """Takes answers, or refuses them while ``refusing`` (the broker away too)."""

    def __init__(self, refusing_for: int = 0) -> None:
        self.answers: list[ExchangeAnswer] = []
        self.refusing_for = refusing_for

    def __call__(self, answer: ExchangeAnswer) -> None:
        if self.refusing_for > 0:
            self.refusing_for -= 1
            raise ConnectionError("broker away")
        self.answers.append(answer)


def test_a_placement_the_database_cannot_take_is_handed_to_the_courier_and_the_claim_let_go() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    claims = seasoned_claims(clock, LEASE)
    away = DatabaseAwayAfterTheCall(uow, clock, away_for_sleeps=None)
    courier = Courier()

    outcome = place_on_exchange(
        order.id, uow, away.exchange, claims=claims, courier=courier, now=clock, sleep=away.sleep
    )

    assert outcome is PlacementOutcome.PLACED
    assert courier.answers == [ExchangeAnswer(order.id, 1, placed_at=T0)]
    assert away.sleeps == []
    assert order.id not in claims.held
    assert uow.committed[order.id].status is OrderStatus.PENDING  # recorded later, from the courier


def test_with_the_courier_away_too_the_holder_keeps_trying_both_until_one_takes_the_answer() -> None:
    order = make_order()
    uow = FakeUnitOfWork(order)
    clock = FakeClock(T0)
    away = DatabaseAwayAfterTheCall(uow, clock, away_for_sleeps=None)
    courier = Courier(refusing_for=3)

    def refuse(claimed: Order) -> None:
        away.exchange(claimed)
        raise outage()

    with pytest.raises(OrderPlacementError):
        place_on_exchange(
            order.id,
            uow,
            refuse,
            claims=seasoned_claims(clock, LEASE),
            courier=courier,
            now=clock,
            sleep=away.sleep,
        )

    assert len(away.sleeps) == 3
    [answer] = courier.answers
    assert (answer.attempt, answer.placed_at, answer.error) == (
        1,
        None,
        f"OrderPlacementError: {UNAVAILABLE}",
    )


def test_a_handed_over_placement_is_recorded_later_and_a_second_one_reported() -> None:
    order = make_order(attempts=1).claim(T0, LEASE)
    uow = FakeUnitOfWork(order)

    first = record_answer(ExchangeAnswer(order.id, 2, placed_at=T0), uow)
    again = record_answer(ExchangeAnswer(order.id, 2, placed_at=T0), uow)
    second = record_answer(ExchangeAnswer(order.id, 1, placed_at=T0 + LEASE), uow)

    assert (first, again, second) == (
        PlacementOutcome.PLACED,
        PlacementOutcome.PLACED,
        PlacementOutcome.PLACED_AGAIN,
    )
    stored = uow.committed[order.id]
    assert (stored.status, stored.placed_attempt, stored.duplicate_attempts) == (OrderStatus.PLACED, 2, (1,))


def test_a_handed_over_refusal_releases_only_its_own_attempts_claim() -> None:
    taken_over = make_order(attempts=1).claim(T0, LEASE)
    uow = FakeUnitOfWork(taken_over)

    assert record_answer(ExchangeAnswer(taken_over.id, 1, error="refused"), uow) is None
    assert uow.committed[taken_over.id] == taken_over
    record_answer(ExchangeAnswer(taken_over.id, 2, error="refused"), uow)
    assert (uow.committed[taken_over.id].claimed_until, uow.committed[taken_over.id].last_error) == (
        None,
        "refused",
    )


def test_taking_over_a_claim_abandoned_mid_placement_is_reported_and_a_first_claim_is_not() -> None:
    abandoned = make_order(attempts=1, claimed_until=T0 - timedelta(seconds=1))
    fresh = make_order()
    uow = FakeUnitOfWork(abandoned, fresh)
    uow.repository.clock = FakeClock(T0)
    reported: list[uuid.UUID] = []

    for order in (abandoned, fresh):
        place_on_exchange(
            order.id,
            uow,
            FakeExchange(),
            claims=seasoned_claims(FakeClock(T0), LEASE),
            on_takeover=reported.append,
            now=FakeClock(T0),
        )

    assert reported == [abandoned.id]
