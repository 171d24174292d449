"""Waiting for a dependency spends none of a message's retries, however long the wait.

``DeadLetteringRetries`` on the in-memory ``StubBroker``: a :class:`WaitingRetry` is republished
to the delay queue with its own delay and its retry count untouched, so the exchange's own
refusals keep the whole budget and the first backoff after an outage of any length.
"""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from workers.retries import DeadLetteringRetries, WaitingRetry

pytestmark = pytest.mark.unit

MAX_RETRIES = 3
MIN_BACKOFF_MS = 1000


class Retries:
    """The middleware on a stub broker, and the one message being retried over and over."""

    def __init__(self) -> None:
        self.given_up: list[str] = []
        self.middleware = DeadLetteringRetries(
            on_give_up=lambda message, _: self.given_up.append(message.message_id)
        )
        self.broker = StubBroker(middleware=[self.middleware])
        dramatiq.actor(
            actor_name="place_order",
            queue_name="placements",
            broker=self.broker,
            max_retries=MAX_RETRIES,
            min_backoff=MIN_BACKOFF_MS,
            max_backoff=60_000,
        )(lambda _order_id: None)
        self.message: dramatiq.Message[None] = dramatiq.Message(
            queue_name="placements", actor_name="place_order", args=("x",), kwargs={}, options={}
        )

    def deliver_and_fail(self, error: BaseException) -> dramatiq.MessageProxy:
        """Deliver the latest copy of the message, fail it with ``error``; keep the retry scheduled."""
        delivery = dramatiq.MessageProxy(self.message)
        self.middleware.after_process_message(self.broker, delivery, exception=error)
        delayed = self.broker.queues["placements.DQ"].queue
        if delayed:
            self.message = dramatiq.Message.decode(delayed.pop())
        return delivery


def test_a_wait_is_scheduled_after_its_own_delay_with_the_retry_count_untouched() -> None:
    retries = Retries()

    before_ms = int(time.time() * 1000)
    delivery = retries.deliver_and_fail(WaitingRetry("the database is away", delay=4000))

    assert not delivery.failed
    assert retries.message.options.get("retries", 0) == 0
    assert before_ms + 4000 <= retries.message.options["eta"] <= time.time() * 1000 + 4000


def test_waits_far_past_the_retry_limit_fail_nothing_and_leave_the_budget_whole() -> None:
    retries = Retries()

    for _ in range(10 * MAX_RETRIES):
        assert not retries.deliver_and_fail(WaitingRetry("the database is away", delay=1)).failed

    assert retries.given_up == []
    for _ in range(MAX_RETRIES):
        assert not retries.deliver_and_fail(RuntimeError("refused by the exchange")).failed
    assert retries.deliver_and_fail(RuntimeError("refused by the exchange")).failed
    assert len(retries.given_up) == 1


def test_the_first_refusal_after_a_long_wait_gets_the_first_backoff() -> None:
    retries = Retries()
    for _ in range(50):
        retries.deliver_and_fail(WaitingRetry("the database is away", delay=1))

    before_ms = int(time.time() * 1000)
    retries.deliver_and_fail(RuntimeError("refused by the exchange"))

    # Dramatiq's first backoff is ``min_backoff`` times U(1, 2): 1 to 2 s, never minutes.
    assert retries.message.options["retries"] == 1
    assert retries.message.options["eta"] - before_ms <= 2 * MIN_BACKOFF_MS + 100
