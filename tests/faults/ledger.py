"""A fault scenario's ledger: what the clients were told, what PostgreSQL holds, what the exchange did.

Independent records are set against each other once the system has settled and the processes
have stopped: the load stream's answers (one JSON line per request; each request's order carries
its index in its ``quantity``, so even the order of a ``500`` can be found), the ``orders`` rows,
the exchange's own record of the placements it accepted (``orders_testkit.outage_workers`` appends
each one to a file, synced, before the call returns: placements and duplicates are counted from
it), what is left in the dead-letter queue, and the workers' logs, where ``exchange call for
order <id>`` is written before each call to the exchange and ``exchange placed order <id>`` after
each success, the placement use case writes ``order <id> placed on attempt <n>`` once ``placed``
is committed, and Dramatiq writes ``Failed to process message place_order('<id>')`` when a
placement raised. The logs still tell which calls were cut short and whether the exchange was
called after ``placed`` was committed; a log line can be missed, a placement on the record cannot.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from orders_testkit.json_logs import messages
from tests.faults.load_stream import request_index
from workers.placement_actor import NOT_RETRYABLE

_ID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
_CALL = re.compile(rf"exchange call for order {_ID}")
_SUCCESS = re.compile(rf"exchange placed order {_ID}")
_RECORDED = re.compile(rf"\border {_ID} placed on attempt")
_FAILED = re.compile(rf"Failed to process message \w+\('{_ID}'\)")
#: A worker taking over a claim whose holder died mid-placement: the exchange may have the order.
_TAKEOVER = re.compile(rf"order {_ID}: attempt \d+ abandoned mid-placement")
#: The API's ERROR line for a COMMIT whose outcome it could not learn: its orders' ids follow.
_OUTCOME_UNKNOWN = "COMMIT outcome unknown for orders"

#: Column titles of the ledger table (docs/fault-injection.md shows the same).
HEADER = (
    "| scenario | sent | 201 | 4xx | 500 | other/timeout | placed | failed | pending | ambiguous "
    "| 500 whose order exists | 500 of unknown outcome | no answer, order exists "
    "| placed twice (detected) | max s 201→placed "
    "| s fault end→last placed "
    "| dead letters | fault s |"
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
    #: The stream's request index plus one: which request created the order.
    quantity: int
    #: Attempts that placed the order again after another had placed it (their record found it).
    duplicate_attempts: tuple[int, ...] = ()


@dataclass(frozen=True)
class Placement:
    """One placement the exchange accepted, as its record holds it."""

    order_id: str
    #: Unix time the exchange's call returned.
    at: float
    #: The worker process that made the call.
    pid: int


def read_placements(path: Path) -> tuple[Placement, ...]:
    """The exchange's record (``orders_testkit.outage_workers``): one ``<order id> <time> <pid>`` line each.

    The workers create the file when they start, so a missing file fails loudly.
    """
    placements = []
    for number, line in enumerate(path.read_text(encoding="ascii").splitlines(), start=1):
        order_id, at, pid = line.split()
        if not re.fullmatch(_ID, order_id):
            raise ValueError(f"{path}:{number}: not an order id: {line!r}")
        placements.append(Placement(order_id, float(at), int(pid)))
    return tuple(placements)


@dataclass(frozen=True)
class ExchangeRecord:
    """What the exchange accepted (its own record) and what the workers' logs say about the calls."""

    #: Every placement the exchange accepted, in the order they were recorded.
    placements: tuple[Placement, ...]
    calls: Counter[str]
    #: ``exchange placed order`` lines; fewer than :attr:`successes` when a line was lost.
    logged_successes: Counter[str]
    #: Orders for which the exchange was called again after ``placed`` had been committed: the
    #: duplicate guard failed. Must always be empty.
    called_after_placed: frozenset[str]
    #: Orders whose last event in a log is a call with no outcome: a killed worker's placements.
    interrupted: frozenset[str]
    #: Orders whose claim a worker took over from a holder that died mid-placement (its log).
    taken_over: frozenset[str] = frozenset()

    @property
    def successes(self) -> Counter[str]:
        """Successful exchange calls per order, from the exchange's record."""
        return Counter(placement.order_id for placement in self.placements)


def exchange_record(logs: list[str], placements: tuple[Placement, ...]) -> ExchangeRecord:
    """Read the workers' logs, one text per worker run, oldest first, beside the exchange's record."""
    calls: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    recorded: set[str] = set()
    called_after_placed: set[str] = set()
    interrupted: set[str] = set()
    taken_over: set[str] = set()
    for text in logs:
        open_calls: set[str] = set()
        for line in messages(text):
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
            elif match := _TAKEOVER.search(line):
                taken_over.add(match.group(1))
        interrupted |= open_calls
    return ExchangeRecord(
        placements,
        calls,
        successes,
        frozenset(called_after_placed),
        frozenset(interrupted),
        frozenset(taken_over),
    )


def outcome_unknown(api_log: str) -> frozenset[str]:
    """The orders the API answered ``500`` without knowing whether their COMMIT happened (its ERROR lines)."""
    return frozenset(
        order_id
        for line in messages(api_log, strict=False)
        if line.startswith(_OUTCOME_UNKNOWN)
        for order_id in re.findall(_ID, line.split(":", 1)[0])
    )


def some(items: Any, shown: int = 10) -> str:
    """The first ``shown`` of ``items`` (sorted), and how many more: ids by the hundred help no one."""
    listed = sorted(items.items() if isinstance(items, dict) else items)
    more = f" … (+{len(listed) - shown} more)" if len(listed) > shown else ""
    return f"{listed[:shown]}{more}"


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
    #: The order id of each message in the placement queue's dead-letter queue at the end.
    dead_letters: list[str]
    fault_s: float
    #: Unix time the fault ended; answers sent after it show whether the service recovered.
    fault_ended_at: float
    #: Why the API or the workers had to be killed at the end, if they did not stop by themselves.
    stop_failure: str | None = None
    #: Orders the API answered ``500`` without knowing whether their COMMIT happened (its log).
    outcome_unknown: frozenset[str] = frozenset()
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

    def _stored_among(self, statuses: tuple[int | None, ...]) -> dict[int, str]:
        """Requests whose answer had one of ``statuses`` yet whose order exists, by request index."""
        order_of_request = {request_index(row.quantity): order_id for order_id, row in self.rows.items()}
        return {
            answer["index"]: order_of_request[answer["index"]]
            for answer in self.answers
            if answer["status"] in statuses and answer["index"] in order_of_request
        }

    @property
    def refused_yet_stored(self) -> dict[int, str]:
        """Requests answered ``500`` whose order exists: the client was told "not placed", wrongly.

        Only a ``COMMIT`` whose outcome the API could not learn in time may cause one.
        """
        return self._stored_among((500,))

    @property
    def refused_yet_stored_unannounced(self) -> dict[int, str]:
        """Of :attr:`refused_yet_stored`, those the API did not log as of unknown outcome: lies."""
        return {
            index: order_id
            for index, order_id in self.refused_yet_stored.items()
            if order_id not in self.outcome_unknown
        }

    @property
    def unanswered_yet_stored(self) -> dict[int, str]:
        """Requests the client gave up on (its own timeout) whose order exists: it was told nothing."""
        return self._stored_among((None,))

    @property
    def unanswered_stored_after_fault(self) -> dict[int, str]:
        """Of :attr:`unanswered_yet_stored`, the requests sent after the fault had ended."""
        sent_at = {answer["index"]: answer["sent_at"] for answer in self.answers}
        return {
            index: order_id
            for index, order_id in self.unanswered_yet_stored.items()
            if sent_at[index] > self.fault_ended_at
        }

    @property
    def untold(self) -> dict[int, str]:
        """Requests answered ``500`` or not at all whose order exists, by request index."""
        return {**self.refused_yet_stored, **self.unanswered_yet_stored}

    @property
    def unexplained(self) -> set[str]:
        """Rows no client was given that no ``500`` or unanswered request explains: must not exist."""
        return self.ambiguous - set(self.untold.values())

    @property
    def duplicates(self) -> dict[str, int]:
        """Orders the exchange placed more than once (its own record), with their count of placements."""
        return {order_id: count for order_id, count in self.exchange.successes.items() if count > 1}

    @property
    def detected_duplicates(self) -> set[str]:
        """Orders the service itself reports as placed twice, or possibly so.

        Its record of a second placement (``duplicate_attempts``), or a takeover of a claim whose
        holder died mid-placement (the taker cannot know whether that call reached the exchange).
        """
        recorded = {order_id for order_id, row in self.rows.items() if row.duplicate_attempts}
        return recorded | self.exchange.taken_over

    @property
    def undetected_duplicates(self) -> set[str]:
        """Orders the exchange placed twice that the service does not report: must not exist."""
        return self.duplicates.keys() - self.detected_duplicates

    @property
    def fault_end_to_last_placement_s(self) -> float | None:
        """Seconds from the fault's end to the exchange's last placement; ``None`` if it placed nothing."""
        if not self.exchange.placements:
            return None
        return max(placement.at for placement in self.exchange.placements) - self.fault_ended_at

    @property
    def unlogged_successes(self) -> int:
        """Placements on the exchange's record that the logs do not show: lines missed."""
        return sum((self.exchange.successes - self.exchange.logged_successes).values())

    @property
    def placed_without_success(self) -> set[str]:
        """Placed rows with no placement on the exchange's record."""
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
        to_last = self.fault_end_to_last_placement_s
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
            len(self.refused_yet_stored),
            len(self.outcome_unknown),
            len(self.unanswered_yet_stored),
            f"{len(self.duplicates)} ({len(self.duplicates.keys() & self.detected_duplicates)})",
            f"{self.max_to_placed_s:.1f}",
            "—" if to_last is None else f"{to_last:.1f}",
            len(self.dead_letters),
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
        untold = self.untold
        untold_answers = Counter(
            "500" if answer["status"] == 500 else f"no answer ({answer['error']})"
            for answer in self.answers
            if answer["index"] in untold
        )
        parts = [
            f"ambiguous commits: {some(self.ambiguous)}",
            f"orders of COMMITs whose outcome the API could not learn (500): {len(self.outcome_unknown)}",
            f"500 or no answer, yet the order exists: {dict(untold_answers)} {some(untold.values())}",
            f"rows no request explains: {some(self.unexplained)}",
            f"placed twice (placements on the exchange's record): {some(self.duplicates)}",
            f"placements on the record missing from the logs: {self.unlogged_successes}",
            f"dead letters: {some(self.dead_letters)}",
            f"interrupted placements: {len(self.exchange.interrupted)}",
            f"201s sent after the fault ended: {self.created_after_fault}",
            f"seconds to answer a 500: {self._latencies(500)}",
            f"requests not answered 201 were sent {self._failure_window()}",
            f"answers other than 201 and 500: {dict(unusual)}",
            f"service stopped by itself: {self.stop_failure or 'yes'}",
        ]
        return "\n".join(parts)
