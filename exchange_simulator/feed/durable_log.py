"""The feed's durable log: every report numbered and on disk before any client sees it.

One file of JSON lines per orders database, in a folder of the state directory named after the
database (:func:`database_folder`): the log holds what the simulated exchange did with that
database's orders, and the ingestor's resume point, kept in the same database, points into it.
Another database (a test's, the benchmark's, one dropped and created again) gets a log of its
own instead of a replay of orders it has never seen. Two kinds of line: an *adoption* (``{"order":
{...}}``), written when the simulator takes on a placed order, which is also the cursor of the
database poll; and a *report*, exactly the JSON object the clients receive, with its
``feed_seq``. A batch of lines is written and fsynced before its reports are indexed, so a
client resuming with ``from=N`` after a crash or restart gets exactly what it missed, and an
order is never adopted twice.

The reports are served from an in-memory index of their encoded lines (a list, where
``feed_seq`` N is item N-1): a resume is a slice, and a frame is a join of strings, which is
what lets one process send tens of thousands of reports a second. The index holds every report
of the log (about 250 bytes each); a feed that runs for days would serve old positions from the
file instead.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from exchange_simulator.feed.placed_orders import START, Cursor
from exchange_simulator.feed.stories import PlacedOrder, Step

#: The log's file name inside its database's folder of ``FEED_STATE_DIR``.
LOG_FILE = "feed.jsonl"


def database_folder(state_dir: Path, database_name: str, database_oid: int) -> Path:
    """Where the log of one database lives: a database created again under its old name has a new oid."""
    safe_name = "".join(char if char.isalnum() or char in "-_" else "_" for char in database_name)
    return state_dir / f"{safe_name}-{database_oid}"


def the_only_log(state_dir: Path) -> Path:
    """The log file under ``state_dir``, for tools that ran the feed against one database."""
    [log] = state_dir.glob(f"*/{LOG_FILE}")
    return log


def adoption_line(order: PlacedOrder, cursor: Cursor) -> str:
    """The line that records that the feed took on ``order`` (and moved its poll past it)."""
    return json.dumps(
        {
            "order": {
                "id": str(order.id),
                "type": order.type,
                "side": order.side,
                "limit_price": None if order.limit_price is None else str(order.limit_price),
                "quantity": order.quantity,
                "placed_at": cursor.placed_at.isoformat(),
            }
        },
        separators=(",", ":"),
    )


def report_line(feed_seq: int, step: Step, reported_at: datetime) -> str:
    """The report as the clients receive it: the contract's JSON object."""
    return json.dumps(
        {
            "feed_seq": feed_seq,
            "exec_id": step.exec_id,
            "order_id": str(step.order_id),
            "seq": step.seq,
            "kind": step.kind,
            "quantity": step.quantity,
            "price": None if step.price is None else str(step.price),
            "ts": reported_at.isoformat(),
        },
        separators=(",", ":"),
    )


@dataclass
class Recovery:
    """What a restarted feed must pick up: where to poll from, and the stories not yet told to the end.

    ``told`` maps each adopted order to the highest seq already logged for it (0: none yet);
    ``placed_at`` holds when each adopted order was placed, for the late-commit sweep.
    """

    cursor: Cursor = START
    adopted: dict[uuid.UUID, PlacedOrder] = field(default_factory=dict)
    told: dict[uuid.UUID, int] = field(default_factory=dict)
    placed_at: dict[uuid.UUID, datetime] = field(default_factory=dict)


class DurableLog:
    """Append-only JSON lines with fsync per batch, and the index of its reports."""

    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / LOG_FILE
        #: Encoded reports; ``reports[n - 1]`` has ``feed_seq`` n.
        self.reports: list[str] = []
        self.recovery = Recovery()
        if self.path.exists():
            self._load()
        self._file = self.path.open("a", encoding="utf-8")

    @property
    def last_feed_seq(self) -> int:
        """The position of the last report in the log (0: none)."""
        return len(self.reports)

    def write(self, lines: Sequence[str]) -> None:
        """Append ``lines`` and fsync them; safe to run in a thread (the index is not touched).

        Call :meth:`index` with the batch's reports afterwards, from the thread that serves them.
        """
        if not lines:
            return
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def index(self, reports: Sequence[str]) -> None:
        """Make written reports visible to clients, in feed_seq order."""
        self.reports.extend(reports)

    def close(self) -> None:
        """Close the file; every written batch is already on disk."""
        self._file.close()

    def _load(self) -> None:
        """Rebuild the index and the recovery state; cut off a line a crash left half written."""
        recovery = self.recovery
        with self.path.open("rb") as file:
            data = file.read()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            with self.path.open("r+b") as file:
                file.truncate(complete)
        for raw in data[:complete].splitlines():
            line = raw.decode("utf-8")
            record = json.loads(line)
            adopted = record.get("order")
            if adopted is not None:
                order = PlacedOrder(
                    id=uuid.UUID(adopted["id"]),
                    type=adopted["type"],
                    side=adopted["side"],
                    limit_price=None if adopted["limit_price"] is None else Decimal(adopted["limit_price"]),
                    quantity=int(adopted["quantity"]),
                )
                recovery.adopted[order.id] = order
                recovery.told[order.id] = 0
                placed = Cursor(datetime.fromisoformat(adopted["placed_at"]), order.id)
                recovery.placed_at[order.id] = placed.placed_at
                # A late commit's adoption sits behind the cursor: it never moves it back.
                if (placed.placed_at, placed.order_id) > (
                    recovery.cursor.placed_at,
                    recovery.cursor.order_id,
                ):
                    recovery.cursor = placed
                continue
            if record["feed_seq"] != len(self.reports) + 1:
                raise ValueError(f"{self.path}: feed_seq {record['feed_seq']} out of sequence")
            self.reports.append(line)
            order_id = uuid.UUID(record["order_id"])
            recovery.told[order_id] = max(recovery.told.get(order_id, 0), int(record["seq"]))
