"""A circuit breaker for the exchange: while it is down, placements wait instead of churning.

Without it, every placement during an outage of the exchange claims its order, calls, is
refused, releases the claim and goes through Dramatiq's delay queue, again and again: the
workers' CPU and the database's go into work that cannot succeed, on the cores the API needs
(docs/benchmarks.md). With it, once the exchange is seen to be down, messages wait in their
greenlets, holding nothing but the message, and one call at a time probes whether it is back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)


class DependencyUnavailableError(Exception):
    """The breaker stayed open for as long as the caller could wait; try again later."""


class CircuitBreaker:
    """Counts the outcomes of calls to a dependency and holds callers back while it is down.

    *Closed*: calls go out. Once at least ``failures_to_open`` calls failed since the dependency
    last answered, and that answer is more than ``quiet_s`` old, the breaker *opens*: callers
    wait in :meth:`admitted`. After a pause one caller goes through as a probe (*half-open*);
    its success closes the breaker and lets every waiter go, its failure reopens it for twice
    the pause, up to ``longest_pause_s``.

    Why time and not a ratio of the last N outcomes: the exchange refuses at once but answers a
    placement only after 0.5 s, so a burst of calls reports its refusals first; at 512 calls in
    flight, 32 of the first 50 outcomes were refusals with the exchange working normally (seen
    in ``make bench``). A ``quiet_s`` well above the time an answer takes (2 s against 0.5 s by
    default) cannot be mistaken for that, and ``failures_to_open`` keeps a slow trickle of
    calls from opening it on a few unlucky refusals. Thread-safe, and cooperative under gevent's
    monkey-patching, which makes :mod:`threading` yield to other greenlets.
    """

    def __init__(
        self,
        name: str,
        *,
        failures_to_open: int,
        quiet_s: float,
        first_pause_s: float,
        longest_pause_s: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        """``on_change``, if given, is told ``True`` when the breaker opens and ``False`` when it closes."""
        if failures_to_open < 1 or quiet_s < 0 or not 0 < first_pause_s <= longest_pause_s:
            raise ValueError("need failures_to_open >= 1, quiet_s >= 0, 0 < first_pause_s <= longest_pause_s")
        self._name = name
        self._failures_to_open = failures_to_open
        self._quiet_s = quiet_s
        self._first_pause_s = first_pause_s
        self._longest_pause_s = longest_pause_s
        self._clock = clock
        self._on_change = on_change
        self._changed = threading.Condition()
        self._last_answer_at = clock()
        self._failures_since_answer = 0
        #: While open, when the next probe may go out; ``None`` while closed.
        self._probe_at: float | None = None
        self._probing = False
        self._pause_s = first_pause_s

    @property
    def is_open(self) -> bool:
        """Whether callers are being held back (open or half-open)."""
        with self._changed:
            return self._probe_at is not None

    @contextmanager
    def admitted(self, wait_s: float) -> Iterator[AdmittedCall]:
        """Wait up to ``wait_s`` until a call may go out, then let the caller make it.

        The caller reports the call's outcome on the :class:`AdmittedCall`; a probe that ends
        without reporting one (it found nothing to call) hands the probe to another waiter.

        :raises DependencyUnavailableError: the breaker stayed open for ``wait_s``.
        """
        call = AdmittedCall(self, probe=self._admit(wait_s))
        try:
            yield call
        finally:
            if call.probe:
                with self._changed:
                    self._probing = False
                    self._changed.notify_all()

    def _succeeded(self) -> None:
        """Any answer closes the breaker: a probe's, or a late one from a call made before it opened."""
        with self._changed:
            self._last_answer_at = self._clock()
            self._failures_since_answer = 0
            if self._probe_at is None:
                return
            self._probe_at = None
            self._pause_s = self._first_pause_s
            self._changed.notify_all()
            self._report(is_open=False)
        logger.warning("%s is available again: calls resume", self._name)

    def _failed(self, *, probe: bool) -> None:
        """Count a failure while closed; while open only the probe's counts, and doubles the pause.

        Calls that went out before the breaker opened fail after it, by the dozen; were they to
        count, one outage would push the pause to its longest at once.
        """
        with self._changed:
            now = self._clock()
            if self._probe_at is not None:
                if probe:
                    self._pause_s = min(2 * self._pause_s, self._longest_pause_s)
                    self._probe_at = now + self._pause_s
                    logger.info("%s still unavailable: next probe in %.1f s", self._name, self._pause_s)
                return
            self._failures_since_answer += 1
            silent_s = now - self._last_answer_at
            if self._failures_since_answer < self._failures_to_open or silent_s < self._quiet_s:
                return
            self._probe_at = now + self._pause_s
            failures = self._failures_since_answer
            self._report(is_open=True)
        logger.warning(
            "%s unavailable: %d calls failed and none answered for %.1f s; holding calls back,"
            " first probe in %.1f s",
            self._name,
            failures,
            silent_s,
            self._pause_s,
        )

    def _report(self, *, is_open: bool) -> None:
        """Tell ``on_change``, under the lock so that reports keep the changes' order; errors are logged."""
        if self._on_change is None:
            return
        try:
            self._on_change(is_open)
        except Exception:
            logger.exception("%s: on_change failed", self._name)

    def _admit(self, wait_s: float) -> bool:
        """Block until a call may go out; return whether the caller is the probe."""
        deadline = self._clock() + wait_s
        with self._changed:
            while True:
                if self._probe_at is None:
                    return False
                now = self._clock()
                if not self._probing and now >= self._probe_at:
                    self._probing = True
                    return True
                if now >= deadline:
                    raise DependencyUnavailableError(f"{self._name} unavailable for {wait_s:.1f} s")
                until = deadline if self._probing else min(deadline, self._probe_at)
                self._changed.wait(until - now)


class AdmittedCall:
    """One call let through by a :class:`CircuitBreaker`: report its outcome here."""

    def __init__(self, breaker: CircuitBreaker, *, probe: bool) -> None:
        self._breaker = breaker
        #: Whether this call is the one probing an open breaker.
        self.probe = probe

    def succeeded(self) -> None:
        """The dependency answered."""
        self._breaker._succeeded()

    def failed(self) -> None:
        """The dependency was unavailable."""
        self._breaker._failed(probe=self.probe)
