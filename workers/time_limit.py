"""Dramatiq's time limit, lifted once the exchange has answered.

The time limit interrupts a placement that hangs (an exchange call that never returns). Once the
exchange has answered, interrupting would be harmful: the answer must be recorded, however long
the database takes to come back, or another delivery would call the exchange a second time. So
the actor lifts the limit for its message as soon as the call has ended.
"""

from __future__ import annotations

import threading

from dramatiq.middleware import TimeLimit


class LiftableTimeLimit(TimeLimit):
    """:class:`dramatiq.middleware.TimeLimit`, plus :meth:`lift` for the message being processed."""

    def lift(self) -> None:
        """Stop the time limit of the message this worker thread (or greenlet) is processing.

        Safe to call more than once; Dramatiq's own removal after the message is then a no-op.
        """
        self.manager.remove_timeout(threading.get_ident())  # type: ignore[no-untyped-call]
