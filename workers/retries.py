"""Retries that never lose a message, and that report every message they give up on."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import Retries

from workers.requeue import request_requeue, requeue_requested

logger = logging.getLogger(__name__)

#: Called with a message that is being dead-lettered and the error that ended it; raises
#: :exc:`GiveUpDeferredError` to have the message retried instead.
GiveUpHandler = Callable[[dramatiq.MessageProxy, BaseException], None]


class WaitingRetry(dramatiq.Retry):
    """A retry that waits for a dependency instead of reporting an answer of the exchange.

    The database, the broker, an open breaker or another delivery's claim. It spends none of
    the message's retries and leaves its backoff where it was: an outage of any length must not
    use up the budget that is there for the exchange's own refusals, or the first ordinary
    refusal after a long outage would fail the order. It must carry a ``delay``.
    """

    def __init__(self, message: str = "", *, delay: int) -> None:
        super().__init__(message, delay=delay)


class GiveUpDeferredError(Exception):
    """The message must not be given up yet (another delivery is placing its order); retry it later."""

    def __init__(self, reason: str, *, retry_after_ms: int) -> None:
        super().__init__(reason)
        self.retry_after_ms = retry_after_ms


#: Seconds a message whose retry could not be scheduled waits before it is requeued, after the
#: first such failure in a row; the pause doubles with each further one.
FIRST_REQUEUE_PAUSE_S = 0.25
#: Longest such pause, in seconds (before jitter, which only shortens it).
LONGEST_REQUEUE_PAUSE_S = 2.0


class DeadLetteringRetries(Retries):
    """Dramatiq's retries with three changes.

    A :class:`WaitingRetry` is scheduled after its own delay without counting as a retry:
    stock ``Retries`` adds one to ``options["retries"]`` for every exception, a ``Retry`` whose
    ``retry_when`` exempts it from the limit included, so waiting for the database spent the
    budget, and the backoff of the next ordinary retry grew with it.

    Stock ``Retries`` republishes a retry to the delay queue and the worker then acks the
    original; when that republish fails, the error is swallowed by the broker's middleware
    dispatch and the message is lost. Here a message whose retry cannot be scheduled (the broker
    refuses it, is unreachable or frozen) is neither acked nor dead-lettered: it is handed back to
    its queue (``basic_nack(requeue=True)``, through ``workers.requeue.RequeuingConsumer``, which
    the broker must use) and retried when it comes back, or RabbitMQ returns it by itself if the
    connection is gone. Its order stays pending and ``on_give_up`` is not told: a dead letter is
    for an error a retry cannot fix, and this one can.

    The requeue waits a moment first, from :data:`FIRST_REQUEUE_PAUSE_S` doubling to
    :data:`LONGEST_REQUEUE_PAUSE_S` with each failure in a row in this process (a scheduled retry
    resets it), with jitter, and at once when the worker is stopping. A requeued message is
    prefetched again at once, and with publishes failing fast (nacks) it would loop every ~0.1 s;
    on a quorum queue every requeue counts toward the placement queue's delivery limit (its
    policy's ``delivery-limit``, ``PLACEMENT_DELIVERY_LIMIT``), so a fast loop would have RabbitMQ
    dead-letter it within seconds, the outcome this avoids. That limit stays the backstop for a
    message that keeps coming back (a poison message); its Dramatiq retry count is not spent,
    since RabbitMQ hands back the message as it was delivered.

    When a message is given up for good, for a non-retryable error or exhausted retries,
    ``on_give_up`` is told, so the order can be marked failed beside its dead-lettered message,
    with the error behind the last ``dramatiq.Retry`` rather than the ``Retry`` itself.
    """

    def __init__(self, *, on_give_up: GiveUpHandler) -> None:
        super().__init__()
        self._on_give_up = on_give_up
        self._lock = threading.Lock()
        self._unscheduled_in_a_row = 0
        self._stopping = threading.Event()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Pause requeues again, as a stopping worker did not."""
        self._stopping.clear()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Requeue without pausing: a stopping worker should hand its messages back at once."""
        self._stopping.set()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        """Schedule a retry, dead-letter the message when it is given up, requeue it when neither works."""
        if exception is None:
            return
        if isinstance(exception, WaitingRetry):
            self._retry_later(broker, message, exception.delay or 0)
            return
        try:
            super().after_process_message(  # type: ignore[no-untyped-call]  # dramatiq leaves it untyped
                broker, message, result=result, exception=exception
            )
        except Exception:
            self._requeue(message)
            return
        if not message.failed:
            with self._lock:
                self._unscheduled_in_a_row = 0
            return
        try:
            self._on_give_up(message, _reason(exception))
        except GiveUpDeferredError as deferred:
            logger.warning("message %s not given up: %s; retrying it", message.message_id, deferred)
            message.failed = False
            self._retry_later(broker, message, deferred.retry_after_ms)
        except Exception:
            logger.exception("could not record that message %s was given up", message.message_id)

    def _retry_later(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, delay_ms: int) -> None:
        """Schedule the message again after ``delay_ms``, its retries unspent, or requeue it if that fails."""
        try:
            broker.enqueue(message.copy(), delay=delay_ms)
        except Exception:
            self._requeue(message)
            return
        with self._lock:
            self._unscheduled_in_a_row = 0

    def _requeue(self, message: dramatiq.MessageProxy) -> None:
        """Have the worker hand the message back to its queue, since no retry could be scheduled."""
        logger.exception(
            "cannot schedule a retry of message %s; returning it to the queue", message.message_id
        )
        with self._lock:
            self._unscheduled_in_a_row += 1
        request_requeue(message)
        message.fail()

    def before_nack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        """Pause before a requeue, in the message's own worker thread, so that it cannot loop fast.

        This runs after every ``after_process_message``, once the time limit no longer applies.
        """
        if requeue_requested(message):
            self._stopping.wait(self._requeue_pause_s())

    def _requeue_pause_s(self) -> float:
        with self._lock:
            failures = self._unscheduled_in_a_row
        return requeue_pause_s(failures) * random.uniform(0.5, 1.0)


def requeue_pause_s(unscheduled_in_a_row: int) -> float:
    """The longest pause before a requeue, after that many retries in a row could not be scheduled."""
    doublings = min(max(0, unscheduled_in_a_row - 1), 16)  # bounded, so that the power cannot overflow
    return min(LONGEST_REQUEUE_PAUSE_S, FIRST_REQUEUE_PAUSE_S * 2.0**doublings)


def _reason(exception: BaseException) -> BaseException:
    """The error that made a message fail: for a ``dramatiq.Retry``, the error it was raised from."""
    if isinstance(exception, dramatiq.Retry) and exception.__cause__ is not None:
        return exception.__cause__
    return exception
