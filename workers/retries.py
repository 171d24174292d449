"""Retries that never lose a message, and that report every message they give up on."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dramatiq
from dramatiq.middleware import Retries

logger = logging.getLogger(__name__)

#: Called with a message that is being dead-lettered and the error that ended it.
GiveUpHandler = Callable[[dramatiq.MessageProxy, BaseException], None]


class DeadLetteringRetries(Retries):
    """Dramatiq's retries with two changes.

    Stock ``Retries`` republishes a retry to the delay queue and the worker then acks the
    original; when that republish fails, the error is swallowed by the broker's middleware
    dispatch and the message is lost. Here a failed republish fails the message instead: the
    worker rejects it, and it lands in the dead-letter queue if the broker takes the rejection,
    or comes back to the queue if the connection is gone. Either way its order stays pending, as
    the failure is one a retry can fix (the stuck-order sweep republishes a dead-lettered one).

    When a message is given up for good, for a non-retryable error or exhausted retries,
    ``on_give_up`` is told, so the order can be marked failed beside its dead-lettered message,
    with the error behind the last ``dramatiq.Retry`` rather than the ``Retry`` itself.
    """

    def __init__(self, *, on_give_up: GiveUpHandler) -> None:
        super().__init__()
        self._on_give_up = on_give_up

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: dramatiq.MessageProxy,
        *,
        result: object = None,
        exception: BaseException | None = None,
    ) -> None:
        """Schedule a retry, or dead-letter the message when no retry is possible."""
        if exception is None:
            return
        try:
            super().after_process_message(  # type: ignore[no-untyped-call]  # dramatiq leaves it untyped
                broker, message, result=result, exception=exception
            )
        except Exception:
            logger.exception("cannot schedule a retry of message %s; rejecting it", message.message_id)
            message.fail()
            return
        if message.failed:
            try:
                self._on_give_up(message, _reason(exception))
            except Exception:
                logger.exception("could not record that message %s was given up", message.message_id)


def _reason(exception: BaseException) -> BaseException:
    """The error that made a message fail: for a ``dramatiq.Retry``, the error it was raised from."""
    if isinstance(exception, dramatiq.Retry) and exception.__cause__ is not None:
        return exception.__cause__
    return exception
