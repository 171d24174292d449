"""The duplicate window: from the exchange's answer to the commit of ``placed``, read from the workers' logs.

An order can be placed twice only if its worker process dies inside this window (solution.md,
*The duplicate-placement window*). ``workers.bootstrap.logged_exchange`` logs ``exchange placed
order <id>`` as the stand-in returns, and the placement use case logs ``order <id> placed on
attempt <n>`` once ``placed`` is committed; both lines carry the logging module's millisecond
timestamp, so the window of each placement is the gap between its two lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

_STAMP = r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]"
_ID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_ANSWERED = re.compile(rf"{_STAMP}.*exchange placed order {_ID}")
_RECORDED = re.compile(rf"{_STAMP}.*\border {_ID} placed on attempt")


def windows_ms(logs: Iterable[str]) -> list[float]:
    """Each placement's window in milliseconds, ascending; placements missing a line are left out."""
    answered: dict[str, datetime] = {}
    recorded: dict[str, datetime] = {}
    for text in logs:
        for line in text.splitlines():
            if match := _ANSWERED.search(line):
                answered[match[2]] = _parse(match[1])
            elif match := _RECORDED.search(line):
                recorded[match[2]] = _parse(match[1])
    return sorted(
        (recorded[order_id] - at).total_seconds() * 1000
        for order_id, at in answered.items()
        if order_id in recorded
    )


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f")
