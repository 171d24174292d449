"""The ingestor's bookkeeping: which feed reports to hand to RabbitMQ next, and how far it may resume.

The feed numbers its reports 1, 2, 3, ... (``feed_seq``) but may repeat and reorder them. The
ingestor hands reports to RabbitMQ strictly in ``feed_seq`` order, in contiguous runs, and
advances its resume point (the *watermark*) over a run only once RabbitMQ has confirmed all of
it. Two properties follow from that one rule:

- the resume point never passes a report that was not confirmed, nor one that has not arrived
  yet (a gap holds it back: on a restart the feed resends from there), except a position
  declared *skipped*: a report that will never parse (:meth:`FeedSequencer.skip`), or one that
  fresh connections went past without it ever arriving readable (:class:`GapWatch`), so that
  one poison report cannot hold the resume point, and every report behind it, for good;
- the reports of one order reach their partition queue in the order the feed numbered them,
  which is their per-order ``seq`` order, since a later report of an order is never handed over
  before an earlier one.

Pure and synchronous: the asyncio process (:mod:`orders_api.execution_feed.ingestor`) owns the
I/O; this module owns the arithmetic, so it is tested without a feed or a broker.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

_Report = TypeVar("_Report")

#: Reports held (received, not handed over yet) at most, unless the caller says otherwise.
DEFAULT_MAX_HELD = 50_000


class SkipReason(enum.StrEnum):
    """Why the resume point passes a ``feed_seq`` without publishing a report for it."""

    #: Read, with its ``feed_seq``, but breaks the contract otherwise: it never will parse.
    MALFORMED = "malformed"
    #: Never read (not even its ``feed_seq``) though fresh connections went past it.
    MISSING = "missing"


@dataclass(frozen=True)
class Taken(Generic[_Report]):
    """A contiguous run of ``feed_seq`` ``first`` .. ``last`` handed over for publishing.

    ``reports`` are its reports to publish; ``skipped`` the positions it passes without one.
    """

    first: int
    last: int
    reports: list[_Report]
    skipped: dict[int, SkipReason] = field(default_factory=dict)


@dataclass(frozen=True)
class _Skipped:
    """Holds the place of a ``feed_seq`` declared skipped, until its run is handed over."""

    reason: SkipReason


class FeedSequencer(Generic[_Report]):
    """Reorders and deduplicates feed reports by ``feed_seq`` and keeps the resume point.

    It holds at most ``max_held`` reports: only those within ``max_held`` positions of the next
    one to hand over. A report beyond is not held (:attr:`deferred` counts them) and is no loss:
    the resume point is below it, so the feed sends it again after a reconnect. Behind a gap
    that is what bounds memory, since reading must go on there (only reading brings the
    missing report). A report not held leaves a gap of its own once everything before it is
    handed over, so that the reader reconnects for it even when the feed has nothing more to send.

    :param resume_from: the last ``feed_seq`` already confirmed (from ``feed_cursors``).
    """

    def __init__(self, resume_from: int, max_held: int = DEFAULT_MAX_HELD) -> None:
        #: Every report with a ``feed_seq`` at or below it is confirmed by RabbitMQ (or skipped).
        self.watermark = resume_from
        #: Reports offered beyond the bound and so not held, since the start.
        self.deferred = 0
        self._max_held = max_held
        #: The ``feed_seq`` the next run handed over begins with.
        self._next = resume_from + 1
        #: Reports received above ``_next - 1``, not handed over yet, and skipped positions.
        self._held: dict[int, _Report | _Skipped] = {}
        #: The highest ``feed_seq`` up to which every report from ``_next`` on is held: kept as
        #: reports arrive, so that :meth:`ready` costs nothing however many are held.
        self._contiguous_to = resume_from
        #: The run handed over and not confirmed yet (at most one: publishing is sequential).
        self._in_flight: Taken[_Report] | None = None
        #: The highest ``feed_seq`` offered or skipped, held or not: reports up to it exist.
        self._highest_read = resume_from

    def offer(self, feed_seq: int, report: _Report) -> bool:
        """Hold ``report`` unless it was already handed over, is already held or is beyond the bound.

        A report takes the place of a skip declared for its ``feed_seq`` and not yet handed over:
        nothing is skipped that arrived readable in time. Says whether it is held anew.
        """
        if feed_seq < self._next or (
            feed_seq in self._held and not isinstance(self._held[feed_seq], _Skipped)
        ):
            return False
        return self._hold(feed_seq, report)

    def skip(self, feed_seq: int) -> bool:
        """Declare ``feed_seq`` skipped (:attr:`SkipReason.MALFORMED`) unless it is held or handed over."""
        if feed_seq < self._next or feed_seq in self._held:
            return False
        return self._hold(feed_seq, _Skipped(SkipReason.MALFORMED))

    def _hold(self, feed_seq: int, entry: _Report | _Skipped) -> bool:
        self._highest_read = max(self._highest_read, feed_seq)
        if feed_seq >= self._next + self._max_held:
            self.deferred += 1
            return False
        self._held[feed_seq] = entry
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

    @property
    def gap_at(self) -> int | None:
        """The first ``feed_seq`` missing while reports after it were read; ``None`` without a gap.

        Reports read after it may be held, or may have been beyond the bound and not held.
        """
        return self._next if self._next <= self._highest_read and self._next not in self._held else None

    def has_gap(self) -> bool:
        """Whether reports were read beyond a ``feed_seq`` that has not arrived (see :attr:`gap_at`)."""
        return self.gap_at is not None

    def skip_gap(self) -> range:
        """Declare the first gap's positions skipped (:attr:`SkipReason.MISSING`); return them.

        Only up to the first report held: with none held, the gap is reports read beyond the
        bound, which the feed sends again, and nothing is declared.
        """
        if not self.has_gap() or not self._held:
            return range(0)
        missing = range(self._next, min(self._held))
        for feed_seq in missing:
            self._held[feed_seq] = _Skipped(SkipReason.MISSING)
        while self._contiguous_to + 1 in self._held:
            self._contiguous_to += 1
        return missing

    def take(self, limit: int) -> Taken[_Report] | None:
        """Hand over the next contiguous run of at most ``limit`` positions, or ``None`` if none is ready.

        :raises RuntimeError: the previous run is neither confirmed nor given back.
        """
        if self._in_flight is not None:
            raise RuntimeError("the previous run of reports is still in flight")
        first = self._next
        reports: list[_Report] = []
        skipped: dict[int, SkipReason] = {}
        while self._next - first < limit and self._next in self._held:
            entry = self._held.pop(self._next)
            if isinstance(entry, _Skipped):
                skipped[self._next] = entry.reason
            else:
                reports.append(entry)
            self._next += 1
        if self._next == first:
            return None
        self._in_flight = Taken(first, self._next - 1, reports, skipped)
        return self._in_flight

    def confirmed(self, run: Taken[_Report]) -> None:
        """RabbitMQ confirmed every report of ``run``: the resume point moves to its end."""
        if run is not self._in_flight:
            raise RuntimeError("only the run in flight can be confirmed")
        self._in_flight = None
        self.watermark = run.last


class GapWatch:
    """Decides when a gap that does not fill is declared missing, so that the ingestor never waits forever.

    A report whose ``feed_seq`` cannot be read leaves a gap that no resend fills. The ingestor
    reconnects over a gap (the feed then resends from the resume point, below the gap); a
    connection *passes* the gap when it delivers a report beyond it while the gap is still open.
    Once ``passes`` connections in a row passed the same gap, its positions are declared
    missing: each of those connections sent every report from the resume point on, and the
    missing one was not among them, so it cannot arrive readable any more. A connection that
    ends before it went past the gap (dropped early, or the feed down) proves nothing and is
    not counted.
    """

    def __init__(self, passes: int) -> None:
        self._passes = passes
        self._gap: int | None = None
        self._passed = 0

    def connection_ended(self, gap_at: int | None, highest_read: int) -> bool:
        """Whether the gap is now to be declared missing, as a connection ended.

        :param gap_at: the gap open as it ended (``None``: none).
        :param highest_read: the highest ``feed_seq`` it read.
        """
        if gap_at != self._gap:
            self._gap, self._passed = gap_at, 0
        if gap_at is None or highest_read <= gap_at:
            return False
        self._passed += 1
        if self._passed < self._passes:
            return False
        self._gap, self._passed = None, 0
        return True


def full_jitter_backoff(
    attempt: int, *, base_s: float, cap_s: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): "full jitter".

    A uniform draw between 0 and ``min(cap_s, base_s * 2**attempt)``: clients that lost the same
    server spread their retries instead of returning all at once.
    """
    return uniform(0.0, min(cap_s, base_s * 2 ** min(attempt, 32)))
