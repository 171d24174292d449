"""Stories into the log: adopt placed orders, then log their reports at the configured rate.

The producer is the log's only writer. One loop polls for newly placed orders (every
``poll_interval_s``) and adopts them (an adoption line, which also moves the poll's cursor);
another logs, each tick, the next reports of the stories in progress, interleaved at random
across orders but in seq order within each, at ``rate`` reports a second. Adoptions and reports
of a tick go to disk in one fsynced batch before any client can see them. Every
``SWEEP_INTERVAL_S`` the first loop also looks behind its cursor for orders committed late
(:mod:`.placed_orders`) and adopts those it missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2

from exchange_simulator.feed.durable_log import DurableLog, adoption_line, report_line
from exchange_simulator.feed.placed_orders import Cursor, PlacedOrders
from exchange_simulator.feed.stories import PlacedOrder, Step, story_random, tell_story

log = logging.getLogger(__name__)

#: Seconds between two batches written to the log.
TICK_S = 0.01
#: Most reports in one batch, so that a backlog never holds the event loop for long.
MAX_BATCH_REPORTS = 20_000
#: Most seconds between two polls while PostgreSQL cannot be read.
MAX_POLL_BACKOFF_S = 5.0
#: Seconds between two sweeps for late commits.
SWEEP_INTERVAL_S = 1.0


@dataclass(frozen=True)
class ProducerSettings:
    """The producer's knobs; see ``orders-exchange-feed --help``."""

    seed: int = 0
    #: Reports a second logged at most; 0: as fast as the stories come.
    rate: float = 0.0
    #: ``None``: random stories; a number: the benchmark's accepted-then-N-fills stories.
    fills_per_order: int | None = None
    poll_interval_s: float = 0.1
    #: Orders read per poll; also the most stories in progress before the next poll.
    poll_limit: int = 1000
    #: Seconds behind the cursor in which a late commit is still found: above the longest
    #: placement transaction plus the workers' clock skew; 0 turns the sweep off.
    late_commit_window_s: float = 10.0


class Producer:
    """Turns placed orders into logged reports; ``on_logged`` wakes the clients after each batch."""

    def __init__(
        self,
        feed_log: DurableLog,
        placed_orders: PlacedOrders,
        settings: ProducerSettings,
        on_logged: Callable[[], None],
    ) -> None:
        self._log = feed_log
        self._placed_orders = placed_orders
        self._settings = settings
        self._on_logged = on_logged
        self._interleave = random.Random(settings.seed)
        self._cursor = feed_log.recovery.cursor
        self._in_progress: list[deque[Step]] = []
        self._adoptions: list[str] = []
        self._poll_failures = 0
        #: When each order adopted within the late-commit window was placed: the sweep skips them.
        self._recent: dict[uuid.UUID, datetime] = dict(feed_log.recovery.placed_at)
        self._window = timedelta(seconds=settings.late_commit_window_s)
        self._resume_stories()
        self._forget_old()

    def _resume_stories(self) -> None:
        """Regenerate the stories a previous run adopted and did not finish; skip what it logged."""
        recovery = self._log.recovery
        for order_id, order in recovery.adopted.items():
            rest = self._story(order)[recovery.told.get(order_id, 0) :]
            if rest:
                self._in_progress.append(deque(rest))
        recovery.adopted.clear()
        recovery.told.clear()
        recovery.placed_at.clear()

    def _story(self, order: PlacedOrder) -> list[Step]:
        return tell_story(order, story_random(self._settings.seed, order.id), self._settings.fills_per_order)

    async def run(self) -> None:
        """Adopt orders and log reports until cancelled.

        Two loops: reading PostgreSQL never holds up the reports of stories already adopted, as
        an exchange's feed does not wait on its clients' database (a frozen one blocks a read
        until it thaws, with no timeout of its own).
        """
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._adopt_orders(), name="adopt-orders")
            tasks.create_task(self._log_reports(), name="log-reports")

    async def _adopt_orders(self) -> None:
        """Poll for placed orders every ``poll_interval_s`` and sweep for late commits every second."""
        settings = self._settings
        next_poll = 0.0
        next_sweep = 0.0
        while True:
            now = time.monotonic()
            if now >= next_poll and len(self._in_progress) < settings.poll_limit:
                # A full page means more are waiting: poll again at once rather than next interval.
                full = await self._poll() == settings.poll_limit
                # While PostgreSQL is away, back off (to MAX_POLL_BACKOFF_S) instead of logging
                # a warning every interval.
                wait = min(settings.poll_interval_s * 2**self._poll_failures, MAX_POLL_BACKOFF_S)
                next_poll = now if full else now + wait
            if settings.late_commit_window_s > 0 and now >= next_sweep:
                await self._sweep()
                next_sweep = now + SWEEP_INTERVAL_S
            await asyncio.sleep(TICK_S)

    async def _log_reports(self) -> None:
        """Log the stories' next reports every tick, at ``rate`` a second (0: all that are ready)."""
        settings = self._settings
        last = time.monotonic()
        allowance = 0.0
        while True:
            now = time.monotonic()
            if settings.rate > 0:
                # A token bucket holding at most a tenth of a second's reports, empty while idle,
                # so that the rate holds from the first report on.
                refill = settings.rate * (now - last) if self._in_progress else 0.0
                allowance = min(allowance + refill, max(settings.rate * 0.1, 1.0))
                count = int(allowance)
                allowance -= count
            else:
                count = MAX_BATCH_REPORTS
            last = now
            await self._log_batch(self._next_steps(min(count, MAX_BATCH_REPORTS)))
            await asyncio.sleep(TICK_S)

    async def _poll(self) -> int:
        """Adopt the orders placed since the cursor; how many were found."""
        try:
            found = await asyncio.to_thread(
                self._placed_orders.after, self._cursor, self._settings.poll_limit
            )
        except psycopg2.Error as error:
            self._poll_failures += 1
            log.warning("cannot read placed orders, trying again: %s", error)
            return 0
        self._poll_failures = 0
        for order, cursor in found:
            self._adopt(order, cursor)
            self._cursor = cursor
        return len(found)

    async def _sweep(self) -> None:
        """Adopt the orders committed behind the cursor, within the window, that were not adopted."""
        try:
            found = await asyncio.to_thread(self._placed_orders.behind, self._cursor, self._window)
        except psycopg2.Error as error:
            log.warning("cannot look for late commits, trying again: %s", error)
            return
        for order, placed in found:
            if order.id not in self._recent:
                log.info("adopting order %s, committed behind the cursor", order.id)
                self._adopt(order, placed)
        self._forget_old()

    def _adopt(self, order: PlacedOrder, placed: Cursor) -> None:
        self._adoptions.append(adoption_line(order, placed))
        self._in_progress.append(deque(self._story(order)))
        if self._settings.late_commit_window_s > 0:
            self._recent[order.id] = placed.placed_at

    def _forget_old(self) -> None:
        """Drop the adoptions the window has left behind: no sweep will see them again."""
        horizon = self._cursor.placed_at - self._window
        self._recent = {order_id: at for order_id, at in self._recent.items() if at > horizon}

    def _next_steps(self, count: int) -> list[Step]:
        """Up to ``count`` next reports, from stories picked at random, each story in seq order."""
        steps: list[Step] = []
        stories = self._in_progress
        while stories and len(steps) < count:
            index = self._interleave.randrange(len(stories))
            story = stories[index]
            steps.append(story.popleft())
            if not story:
                stories[index] = stories[-1]
                stories.pop()
        return steps

    async def _log_batch(self, steps: list[Step]) -> None:
        if not steps and not self._adoptions:
            return
        now = datetime.now(UTC)
        first = self._log.last_feed_seq + 1
        reports = [report_line(first + offset, step, now) for offset, step in enumerate(steps)]
        lines = [*self._adoptions, *reports]
        self._adoptions = []
        await asyncio.to_thread(self._log.write, lines)
        self._log.index(reports)
        if reports:
            self._on_logged()
