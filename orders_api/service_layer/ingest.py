"""The ingestor's bookkeeping: which feed reports to hand to RabbitMQ next, and how far it may resume.

The feed numbers its reports 1, 2, 3, ... (``feed_seq``) but may repeat and reorder them. The
ingestor hands reports to RabbitMQ strictly in ``feed_seq`` order, in contiguous runs, and
advances its resume point (the *watermark*) over a run only once RabbitMQ has confirmed all of
it. Two properties follow from that one rule:

- the resume point never passes a report that was not confirmed, nor one that has not arrived
  yet (a gap holds it back: on a restart the feed resends from there);
- the reports of one order reach their partition queue in the order the feed numbered them,
  which is their per-order ``seq`` order, since a later report of an order is never handed over
  before an earlier one.

Pure and synchronous: the asyncio process (:mod:`orders_api.entrypoints.ingestor`) owns the
I/O; this module owns the arithmetic, so it is tested without a feed or a broker.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

_Report = TypeVar("_Report")


@dataclass(frozen=True)
class Taken(Generic[_Report]):
    """A contiguous run of reports handed over for publishing: ``feed_seq`` ``first`` .. ``last``."""

    first: int
    last: int
    reports: list[_Report]


class FeedSequencer(Generic[_Report]):
    """Reorders and deduplicates feed reports by ``feed_seq`` and keeps the resume point.

    :param resume_from: the last ``feed_seq`` already confirmed (from ``feed_cursors``).
    """

    def __init__(self, resume_from: int) -> None:
        #: Every report with a ``feed_seq`` at or below it is confirmed by RabbitMQ.
        self.watermark = resume_from
        #: The ``feed_seq`` the next run handed over begins with.
        self._next = resume_from + 1
        #: Reports received above ``_next - 1``, not handed over yet.
        self._held: dict[int, _Report] = {}
        #: The highest ``feed_seq`` up to which every report from ``_next`` on is held: kept as
        #: reports arrive, so that :meth:`ready` costs nothing however many are held.
        self._contiguous_to = resume_from
        #: The run handed over and not confirmed yet (at most one: publishing is sequential).
        self._in_flight: Taken[_Report] | None = None

    def offer(self, feed_seq: int, report: _Report) -> bool:
        """Hold ``report`` unless it was already handed over or is already held; say whether it was new."""
        if feed_seq < self._next or feed_seq in self._held:
            return False
        self._held[feed_seq] = report
        while self._contiguous_to + 1 in self._held:
            self._contiguous_to += 1
        return True

    @property
    def held(self) -> int:
        """Reports received and not handed over yet, ready or waiting behind a gap."""
        return len(self._held)

    def ready(self) -> int:
        """How many reports could be handed over now, up to the first gap."""
        return self._contiguous_to - self._next + 1

    def has_gap(self) -> bool:
        """Whether reports are held behind a ``feed_seq`` that has not arrived."""
        return bool(self._held) and self._next not in self._held

    def take(self, limit: int) -> Taken[_Report] | None:
        """Hand over the next contiguous run of at most ``limit`` reports, or ``None`` if none is ready.

        :raises RuntimeError: the previous run is neither confirmed nor given back.
        """
        if self._in_flight is not None:
            raise RuntimeError("the previous run of reports is still in flight")
        reports: list[_Report] = []
        while len(reports) < limit and self._next in self._held:
            reports.append(self._held.pop(self._next))
            self._next += 1
        if not reports:
            return None
        self._in_flight = Taken(self._next - len(reports), self._next - 1, reports)
        return self._in_flight

    def confirmed(self, run: Taken[_Report]) -> None:
        """RabbitMQ confirmed every report of ``run``: the resume point moves to its end."""
        if run is not self._in_flight:
            raise RuntimeError("only the run in flight can be confirmed")
        self._in_flight = None
        self.watermark = run.last


def full_jitter_backoff(
    attempt: int, *, base_s: float, cap_s: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): "full jitter".

    A uniform draw between 0 and ``min(cap_s, base_s * 2**attempt)``: clients that lost the same
    server spread their retries instead of returning all at once.
    """
    return uniform(0.0, min(cap_s, base_s * 2 ** min(attempt, 32)))
