"""A fault scenario's ledger: what the clients were told, what PostgreSQL holds, what the workers did.

Three independent records are set against each other once the system has settled and the
processes have stopped: the load stream's answers (one JSON line per request), the ``orders``
rows, and the workers' logs, where ``workers.bootstrap.logged_exchange`` writes
``exchange call for order <id>`` before each call to the exchange and ``exchange placed order
<id>`` after each success, the placement use case writes ``order <id> placed on attempt <n>``
once ``placed`` is committed, and Dramatiq writes ``Failed to process message
place_order('<id>')`` when a placement raised.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from workers.placement_actor import NOT_RETRYABLE

_ID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_CALL = re.compile(rf"exchange call for order {_ID}")
_SUCCESS = re.compile(rf"exchange placed order {_ID}")
_RECORDED = re.compile(rf"\border {_ID} placed on attempt")
_FAILED = re.compile(rf"Failed to process message \w+\('{_ID}'\)")

#: Column titles of the ledger table (docs/fault-injection.md shows the same).
HEADER = (
    "| scenario | sent | 201 | 4xx | 500 | other/timeout | placed | failed | pending | ambiguous "
    "| duplicates | max s 201→placed | fault s |"
)
#: The Markdown rule under :data:`HEADER`.
RULE = "|" + " --- |" * HEADER.count(" | ") + " --- |"


@dataclass(frozen=True)
class OrderRow:
    """The columns of one ``orders`` row that the ledger needs."""

    status: str
    created_at: datetime
    placed_at: datetime | None
    attempts: int
    last_error: str | None


@dataclass(frozen=True)
class ExchangeRecord:
    """What the workers' logs say each order went through, in log order."""

    calls: Counter[str]
    successes: Counter[str]
    #: Orders for which the exchange was called again after ``placed`` had been committed: the
    #: duplicate guard failed. Must always be empty.
    called_after_placed: frozenset[str]
    #: Orders whose last event in a log is a call with no outcome: a killed worker's placements.
    interrupted: frozenset[str]


def exchange_record(logs: list[str]) -> ExchangeRecord:
    """Read the workers' logs, one text per worker run, oldest first."""
    calls: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    recorded: set[str] = set()
    called_after_placed: set[str] = set()
    interrupted: set[str] = set()
    for text in logs:
        open_calls: set[str] = set()
        for line in text.splitlines():
            if match := _CALL.search(line):
                order_id = match.group(1)
                calls[order_id] += 1
                open_calls.add(order_id)
                if order_id in recorded:
                    called_after_placed.add(order_id)
            elif match := _SUCCESS.search(line):
                successes[match.group(1)] += 1
                open_calls.discard(match.group(1))
            elif match := _RECORDED.search(line):
                recorded.add(match.group(1))
            elif match := _FAILED.search(line):
                open_calls.discard(match.group(1))
        interrupted |= open_calls
    return ExchangeRecord(calls, successes, frozenset(called_after_placed), frozenset(interrupted))


def read_answers(path: Path) -> list[dict[str, Any]]:
    """The load stream's lines, each one request and its answer."""
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def failed_for_good_reason(row: OrderRow) -> bool:
    """A failed order is acceptable only if an error that no retry can fix failed it."""
    reasons = tuple(f"{error.__name__}:" for error in NOT_RETRYABLE)
    return row.status == "failed" and (row.last_error or "").startswith(reasons)


@dataclass(frozen=True)
class Ledger:
    """One scenario's account; :meth:`row` prints it, the test asserts on its fields."""

    scenario: str
    answers: list[dict[str, Any]]
    rows: dict[str, OrderRow]
    exchange: ExchangeRecord
    fault_s: float
    #: Unix time the fault ended; answers sent after it show whether the service recovered.
    fault_ended_at: float
    statuses: Counter[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses", Counter(row.status for row in self.rows.values()))

    @property
    def sent(self) -> int:
        return len(self.answers)

    def _count(self, predicate: Any) -> int:
        return sum(1 for answer in self.answers if predicate(answer))

    @property
    def created_ids(self) -> set[str]:
        """Ids of the orders answered ``201``."""
        return {str(answer["order_id"]) for answer in self.answers if answer["status"] == 201}

    @property
    def created(self) -> int:
        return self._count(lambda answer: answer["status"] == 201)

    @property
    def client_errors(self) -> int:
        return self._count(lambda answer: answer["status"] is not None and 400 <= answer["status"] < 500)

    @property
    def server_errors(self) -> int:
        return self._count(lambda answer: answer["status"] == 500)

    @property
    def other(self) -> int:
        """Answers neither 201, 4xx nor 500, and requests with no answer at all (timeouts, resets)."""
        return self.sent - self.created - self.client_errors - self.server_errors

    @property
    def created_after_fault(self) -> int:
        """``201`` answers to requests sent after the fault ended: the service recovered by itself."""
        return self._count(lambda answer: answer["status"] == 201 and answer["sent_at"] > self.fault_ended_at)

    @property
    def missing(self) -> set[str]:
        """``201`` ids with no row: lost orders."""
        return self.created_ids - self.rows.keys()

    @property
    def not_placed(self) -> dict[str, OrderRow]:
        """``201`` orders neither placed nor failed for a reason no retry can fix."""
        return {
            order_id: row
            for order_id, row in self.rows.items()
            if order_id in self.created_ids and row.status != "placed" and not failed_for_good_reason(row)
        }

    @property
    def ambiguous(self) -> set[str]:
        """Rows whose id no client was given: commits whose outcome the client never learnt."""
        return self.rows.keys() - self.created_ids

    @property
    def duplicates(self) -> dict[str, int]:
        """Orders placed on the exchange more than once, with their count of successful calls."""
        return {order_id: count for order_id, count in self.exchange.successes.items() if count > 1}

    @property
    def placed_without_success(self) -> set[str]:
        """Placed rows with no successful exchange call in the logs."""
        placed = {order_id for order_id, row in self.rows.items() if row.status == "placed"}
        return placed - self.exchange.successes.keys()

    @property
    def successes_without_row(self) -> set[str]:
        """Exchange successes for orders with no row: placements of an order that was rolled back."""
        return self.exchange.successes.keys() - self.rows.keys()

    @property
    def max_to_placed_s(self) -> float:
        return max(
            ((row.placed_at - row.created_at).total_seconds() for row in self.rows.values() if row.placed_at),
            default=0.0,
        )

    def row(self) -> str:
        """The ledger as one row of :data:`HEADER`'s table."""
        cells = (
            self.scenario,
            self.sent,
            self.created,
            self.client_errors,
            self.server_errors,
            self.other,
            self.statuses["placed"],
            self.statuses["failed"],
            self.statuses["pending"],
            len(self.ambiguous),
            sum(count - 1 for count in self.duplicates.values()),
            f"{self.max_to_placed_s:.1f}",
            f"{self.fault_s:.1f}",
        )
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    def _latencies(self, status: int) -> str:
        latencies = sorted(answer["latency_s"] for answer in self.answers if answer["status"] == status)
        if not latencies:
            return "none"
        return f"median {latencies[len(latencies) // 2]:.2f}, max {latencies[-1]:.2f}"

    def _failure_window(self) -> str:
        if not self.answers:
            return "(no requests)"
        start = min(answer["sent_at"] for answer in self.answers)
        failed = [answer["sent_at"] - start for answer in self.answers if answer["status"] != 201]
        if not failed:
            return "never"
        return f"from {min(failed):.1f} s to {max(failed):.1f} s into the stream"

    def details(self) -> str:
        """What a failing assertion (or a curious reader) wants beyond the row."""
        unusual = Counter(
            str(answer["status"] or answer["error"])
            for answer in self.answers
            if answer["status"] not in (201, 500)
        )
        parts = [
            f"ambiguous commits: {sorted(self.ambiguous)}",
            f"duplicates (successful calls): {self.duplicates}",
            f"interrupted placements: {len(self.exchange.interrupted)}",
            f"201s sent after the fault ended: {self.created_after_fault}",
            f"seconds to answer a 500: {self._latencies(500)}",
            f"requests not answered 201 were sent {self._failure_window()}",
            f"answers other than 201 and 500: {dict(unusual)}",
        ]
        return "\n".join(parts)
