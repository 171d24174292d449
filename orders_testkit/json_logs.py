"""Reading the service's logs, one JSON object per line (orders_api.logging_setup), in tests and benchmarks.

The processes write whole lines, but a test may read a log while a line is being written: a last
line without its newline is left for the next read, never parsed half-written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class NotJsonLineError(AssertionError):
    """A complete line of a log that is not a JSON object."""


def records(text: str, *, strict: bool = True) -> list[dict[str, Any]]:
    """Every complete line of ``text`` as a JSON object.

    :param strict: fail on a line that is not a JSON object; otherwise skip it (for output that
        mixes the service's lines with another tool's, like ``make run``'s supervisor).
    :raises NotJsonLineError: ``strict`` and a line is not a JSON object.
    """
    found = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if not line.endswith("\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            found.append(record)
        elif strict:
            raise NotJsonLineError(f"line {number} is not a JSON object: {line!r}")
    return found


def messages(text: str, *, strict: bool = True) -> list[str]:
    """The ``message`` of every complete line of ``text`` (see :func:`records`)."""
    return [str(record.get("message", "")) for record in records(text, strict=strict)]


def read_messages(log: Path, *, strict: bool = True) -> list[str]:
    """The messages of the log file ``log``."""
    return messages(log.read_text(encoding="utf-8", errors="replace"), strict=strict)
