"""The execution feed scenarios' ledger: what the feed logged against what the applier stored."""

from __future__ import annotations

from dataclasses import dataclass

#: Columns of this suite's second table, printed after the placement ledgers.
FEED_HEADER = (
    "| scenario | reports logged | stored | missing | stored twice | orders unlike a replay"
    " | fault s | s fault end→caught up | s fault end→all applied |"
)
FEED_RULE = "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"


@dataclass(frozen=True)
class FeedLedger:
    """What the feed logged against what the applier stored, after the fault."""

    scenario: str
    logged: int
    stored: int
    missing: int
    stored_twice: int
    unlike_replay: int
    fault_s: float
    #: Seconds from the fault's end until every report logged by then was applied.
    caught_up_s: float
    #: Seconds from the fault's end until the whole stream (logged after it too) was applied.
    settled_after_s: float

    def row(self) -> str:
        return (
            f"| {self.scenario} | {self.logged} | {self.stored} | {self.missing} | {self.stored_twice}"
            f" | {self.unlike_replay} | {self.fault_s:.1f} | {self.caught_up_s:.1f}"
            f" | {self.settled_after_s:.1f} |"
        )
