"""The duplicate window: from the exchange's answer to the commit of ``placed``, read from the workers' logs.

An order can be placed twice only if its worker process dies inside this window (solution.md,
*The duplicate-placement window*). ``workers.bootstrap.logged_exchange`` logs ``exchange placed
order <id>`` as the stand-in returns, and the placement use case logs ``order <id> placed on
attempt <n>`` once ``placed`` is committed; both are JSON lines (``orders_api.logging_setup``)
whose ``timestamp`` has microseconds, so the window of each placement is the gap between its two
lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime

_ID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_ANSWERED = re.compile(rf"exchange placed order {_ID}")
_RECORDED = re.compile(rf"order {_ID} placed on attempt \d+")


def windows_ms(logs: Iterable[str]) -> list[float]:
    """Each placement's window in milliseconds, ascending; placements missing a line are left out."""
    answered: dict[str, datetime] = {}
    recorded: dict[str, datetime] = {}
    for text in logs:
        for at, message in _timed_messages(text):
            if match := _ANSWERED.fullmatch(message):
                answered[match[1]] = at
            elif match := _RECORDED.fullmatch(message):
                recorded[match[1]] = at
    return sorted(
        (recorded[order_id] - at).total_seconds() * 1000
        for order_id, at in answered.items()
        if order_id in recorded
    )


def _timed_messages(text: str) -> Iterator[tuple[datetime, str]]:
    """Each JSON line's time and message; any other line (say, one cut short by a kill) is skipped."""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("timestamp"), str):
            yield datetime.fromisoformat(record["timestamp"]), str(record.get("message", ""))
