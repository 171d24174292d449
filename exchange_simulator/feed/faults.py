"""A real feed's misbehaviour, per connection: repeated reports, reordered ones, dropped connections.

Everything is seeded, so a failing test can be replayed; everything is off with ``--clean``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: How many positions later a repeated report may come again.
REPEAT_WINDOW = 4


@dataclass(frozen=True)
class FaultSettings:
    """How badly the feed behaves; zero everywhere is a clean feed."""

    #: Chance that a report is sent a second time, a few reports later.
    repeat_probability: float = 0.0
    #: Chance that a report is held back and sent after the next one.
    reorder_probability: float = 0.0
    #: Frames a connection lives, on average, before the feed cuts it without a close frame; 0: never.
    drop_every_frames: int = 0


class ConnectionFaults:
    """The faults of one connection: which reports to disorder and when to drop it."""

    def __init__(self, settings: FaultSettings, rng: random.Random) -> None:
        self._settings = settings
        self._rng = rng
        self._held: str | None = None

    def frames_before_drop(self) -> int | None:
        """Frames to send before dropping the connection (``None``: never), drawn around the mean."""
        every = self._settings.drop_every_frames
        return None if every <= 0 else self._rng.randint(1, 2 * every - 1)

    def disorder(self, reports: list[str], more_coming: bool) -> list[str]:
        """``reports`` as this connection sends them: some repeated, some swapped with the next.

        A report held back to be swapped waits for the next one, across calls, unless nothing
        more is coming yet (``more_coming`` false), when it is sent at the end.
        """
        settings = self._settings
        out: list[str] = []
        for report in reports:
            if self._held is not None:
                out.extend((report, self._held))
                self._held = None
            elif self._rng.random() < settings.reorder_probability:
                self._held = report
            else:
                out.append(report)
        if self._held is not None and not more_coming:
            out.append(self._held)
            self._held = None
        if settings.repeat_probability > 0:
            out = self._repeat(out)
        return out

    def _repeat(self, reports: list[str]) -> list[str]:
        out = list(reports)
        for index in range(len(reports) - 1, -1, -1):
            if self._rng.random() < self._settings.repeat_probability:
                later = min(len(out), index + 1 + self._rng.randint(0, REPEAT_WINDOW))
                out.insert(later, reports[index])
        return out
