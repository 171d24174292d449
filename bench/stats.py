"""Small statistics the report needs, on plain lists, with no dependency."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(ordered: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 to 100) of ``ordered``, ascending; nearest rank, NaN if empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def steady_rate(ordered_times: Sequence[float], low: float = 0.1, high: float = 0.7) -> float:
    """Events per second between the ``low`` and ``high`` fractions of ``ordered_times`` (seconds).

    Leaves out the start (workers still starting, queues still filling) and the tail (the few
    events that waited out a retry), which would otherwise say more about the run's length than
    about the rate. The rate is the least-squares slope of the event count over time, not the
    count between the two ends: placements arrive in waves (every thread starts its 0.5 s call
    at about the same moment), and a ratio between two instants would depend on where in a
    wave each falls, by up to a wave in a few.
    """
    if len(ordered_times) < 10:
        return math.nan
    window = ordered_times[int(low * len(ordered_times)) : int(high * len(ordered_times))]
    mean_time = sum(window) / len(window)
    mean_count = (len(window) - 1) / 2
    spread = sum((time - mean_time) ** 2 for time in window)
    if spread <= 0:
        return math.nan
    return sum((time - mean_time) * (count - mean_count) for count, time in enumerate(window)) / spread
