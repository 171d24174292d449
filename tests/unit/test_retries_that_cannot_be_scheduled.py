"""``DeadLetteringRetries`` on the in-memory ``StubBroker``: which failed messages are requeued.

A broker whose ``enqueue`` fails stands in for RabbitMQ refusing the retry;
``test_a_retry_that_cannot_be_republished_is_requeued_not_dead_lettered_and_its_order_placed_later``
(integration) checks the same against the real broker.
"""

from __future__ import annotations

import time

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.errors import ConnectionClosed

from workers.requeue import requeue_requested
from workers.retries import (
    FIRST_REQUEUE_PAUSE_S,
    LONGEST_REQUEUE_PAUSE_S,
    DeadLetteringRetries,
    GiveUpDeferredError,
    requeue_pause_s,
)

pytestmark = pytest.mark.unit


class RefusingBroker(StubBroker):
    """A stub broker that refuses publishes while ``refusing``, as RabbitMQ does when it nacks or is away."""

    refusing = True

    def enqueue(self, message: dramatiq.Message[None], *, delay: int | None = None) -> dramatiq.Message[None]:
        if self.refusing:
            raise ConnectionClosed("refused")  # type: ignore[no-untyped-call]
        return super().enqueue(message, delay=delay)


class Retries:
    """The middleware under test on a refusing broker, with the messages it gave up on."""

    def __init__(self) -> None:
        self.given_up: list[str] = []
        #: When set, giving up is deferred with this error, as while another delivery holds a claim.
        self.defer_with: GiveUpDeferredError | None = None
        self.middleware = DeadLetteringRetries(on_give_up=self._give_up)
        self.broker = RefusingBroker(middleware=[self.middleware])
        dramatiq.actor(
            actor_name="place_order", queue_name="placements", broker=self.broker, throws=ValueError
        )(lambda _order_id: None)

    def _give_up(self, message: dramatiq.MessageProxy, error: BaseException) -> None:
        if self.defer_with is not None:
            raise self.defer_with
        self.given_up.append(message.message_id)

    def failed_delivery(self, error: BaseException) -> dramatiq.MessageProxy:
        """A delivery of ``place_order`` that raised ``error``, after the middleware has seen it."""
        message = dramatiq.MessageProxy(
            dramatiq.Message(
                queue_name="placements", actor_name="place_order", args=("x",), kwargs={}, options={}
            )
        )
        self.middleware.after_process_message(self.broker, message, exception=error)
        return message


def test_a_retry_that_cannot_be_scheduled_requeues_the_message_and_gives_nothing_up() -> None:
    retries = Retries()

    message = retries.failed_delivery(RuntimeError("exchange outage"))

    assert message.failed
    assert requeue_requested(message)
    assert retries.given_up == []


def test_an_error_retrying_cannot_fix_is_given_up_not_requeued() -> None:
    retries = Retries()

    message = retries.failed_delivery(ValueError("instrument not tradable"))

    assert message.failed
    assert not requeue_requested(message)
    assert retries.given_up == [message.message_id]


def test_the_pause_before_a_requeue_doubles_with_each_failure_in_a_row_up_to_the_longest() -> None:
    pauses = [requeue_pause_s(failures) for failures in (1, 2, 3, 4, 5, 10_000)]

    assert pauses[0] == FIRST_REQUEUE_PAUSE_S
    assert pauses[1] == 2 * FIRST_REQUEUE_PAUSE_S
    assert pauses[-1] == LONGEST_REQUEUE_PAUSE_S
    assert pauses == sorted(pauses)


def requeue_wait_s(retries: Retries, message: dramatiq.MessageProxy) -> float:
    """How long the worker would wait before handing ``message`` back to its queue."""
    started = time.monotonic()
    retries.middleware.before_nack(retries.broker, message)
    return time.monotonic() - started


def test_a_requeue_waits_and_a_retry_scheduled_again_shortens_the_wait_to_the_first() -> None:
    retries = Retries()
    for _ in range(4):
        retries.failed_delivery(RuntimeError("exchange outage"))
    retries.broker.refusing = False
    retries.failed_delivery(RuntimeError("exchange outage"))
    retries.broker.refusing = True

    message = retries.failed_delivery(RuntimeError("exchange outage"))

    assert FIRST_REQUEUE_PAUSE_S / 2 <= requeue_wait_s(retries, message) < 2 * FIRST_REQUEUE_PAUSE_S


def test_a_stopping_worker_requeues_without_pausing() -> None:
    retries = Retries()
    messages = [retries.failed_delivery(RuntimeError("exchange outage")) for _ in range(5)]
    retries.middleware.before_worker_shutdown(retries.broker, dramatiq.Worker(retries.broker))

    assert requeue_wait_s(retries, messages[-1]) < FIRST_REQUEUE_PAUSE_S / 2


def test_a_give_up_deferred_by_a_live_claim_is_retried_after_it_instead_of_dead_lettered() -> None:
    retries = Retries()
    retries.broker.refusing = False
    retries.defer_with = GiveUpDeferredError("order claimed by another delivery", retry_after_ms=4000)

    before_ms = int(time.time() * 1000)
    message = retries.failed_delivery(ValueError("instrument not tradable"))

    assert not message.failed
    assert retries.given_up == []
    [encoded] = retries.broker.queues["placements.DQ"].queue
    retry = dramatiq.Message.decode(encoded)
    assert retry.message_id == message.message_id
    assert before_ms + 4000 <= retry.options["eta"] <= time.time() * 1000 + 4000
