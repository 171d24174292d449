"""The outcome of a COMMIT whose reply was lost, learnt from what it wrote and proved replicated.

A COMMIT whose connection dies (the server restarted, froze, failed over, or the network failed)
may or may not have happened, and under synchronous replication "happened" has two levels: the
commit record is in the primary's WAL ("committed locally"), and the synchronous standby has it
too. Only the second survives a failover, so only the second may be answered ``201``.

Three rules follow, each learnt from how PostgreSQL behaves:

- **A COMMIT in progress is never ended.** A backend ended while it waits for the standby
  (wait event ``SyncRep``), or on its way there, stays committed locally and only warns that the
  standby may not have it. So the lost transaction's backend is ended only while it is idle in
  its transaction (the COMMIT never reached it: a partition), which aborts it; a backend running
  the COMMIT is waited for, within the bound.
- **The effect is looked up, not the transaction id.** After a failover the new primary hands
  out again the ids the old one used but never streamed, so ``pg_xact_status`` may answer for
  another transaction. The rows the transaction inserted (orders under fresh UUIDs) cannot be
  written by anyone else: present, it committed; absent on a primary, it did not.
- **Present is proved replicated by a later commit.** The lookup writes a WAL record (a
  transactional ``pg_logical_emit_message``, which every role may call) in the transaction that
  saw the rows, and commits it at the session's ``synchronous_commit``, the cluster's own level.
  Commit records are ordered in WAL, so once that COMMIT returns the standby holds every earlier
  record, the lost COMMIT's among them. Without a synchronous standby (``make run``) it costs one
  local WAL flush.

(``statement_timeout`` does not cut the standby wait short: PostgreSQL disables it before it
commits; the client's reply deadline, :func:`orders_api.adapters.postgres.database.bound_database_waits`,
bounds that wait.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from orders_api.timeout_rules import COMMIT_OUTCOME_WAIT_S

logger = logging.getLogger(__name__)

#: Seconds between two attempts.
_POLL_S = 0.5

#: Read before a COMMIT that is to be looked up if its reply is lost: the transaction's id, which
#: names its backend while it runs (``NULL`` if it wrote nothing: then nothing can be lost).
BEFORE_COMMIT: Final = sa.text("SELECT pg_current_xact_id_if_assigned()::text")
#: Ends the lost transaction's backend if, and only if, the COMMIT never reached it; returns its
#: state if it still holds the transaction. The pid and the id together name it on this server
#: alone: after a failover neither names anything here.
_SETTLE: Final = sa.text(
    "SELECT state, CASE WHEN state = 'idle in transaction' THEN pg_terminate_backend(pid, 1000) END"
    " FROM pg_stat_activity WHERE pid = :pid AND backend_xid = xid(CAST(:xid AS xid8))"
)
_EFFECT: Final = sa.text(
    "SELECT pg_is_in_recovery(), (SELECT count(*) FROM orders WHERE id = ANY(CAST(:order_ids AS uuid[])))"
)
#: A WAL record in the lookup's transaction, so that its COMMIT waits for the synchronous standby.
_PROOF_RECORD: Final = sa.text("SELECT pg_logical_emit_message(true, 'orders-api', 'commit outcome')")


@dataclass(frozen=True)
class LostCommit:
    """A COMMIT whose reply was lost: whose backend ran it and what it inserted."""

    backend_pid: int
    xid: str
    order_ids: tuple[uuid.UUID, ...]


class CommitOutcomeUnknownError(Exception):
    """The lookup could not learn within its bound whether the COMMIT happened: it may have."""

    def __init__(self, commit: LostCommit, reason: str) -> None:
        super().__init__(
            f"outcome of the COMMIT of transaction {commit.xid}"
            f" ({len(commit.order_ids)} orders) unknown: {reason}"
        )
        self.commit = commit


def committed(engine: sa.Engine, commit: LostCommit, *, wait_s: float = COMMIT_OUTCOME_WAIT_S) -> bool:
    """Whether ``commit`` took effect and is replicated (``True``) or never will (``False``).

    Retried on fresh connections while the server is away, restarting or failing over.

    :raises CommitOutcomeUnknownError: neither could be learnt within ``wait_s``.
    """
    if not commit.order_ids:
        raise CommitOutcomeUnknownError(commit, "it inserted no order to look for")
    deadline = time.monotonic() + wait_s
    reason = "no attempt finished"
    while True:
        try:
            outcome = _attempt(engine, commit)
        except sa.exc.DBAPIError as error:
            reason = f"{type(error.orig).__name__}: {str(error.orig).strip()}"
        else:
            if isinstance(outcome, bool):
                return outcome
            reason = outcome
        if time.monotonic() >= deadline:
            raise CommitOutcomeUnknownError(commit, f"{reason} after {wait_s:g} s")
        time.sleep(_POLL_S)


def _attempt(engine: sa.Engine, commit: LostCommit) -> bool | str:
    """One look on a fresh connection: the outcome, or why it cannot be told yet."""
    with engine.connect() as connection:
        state = connection.execute(_SETTLE, {"pid": commit.backend_pid, "xid": commit.xid}).first()
        connection.commit()
        if state is not None:
            return f"its backend is still {state[0]!r}"
        in_recovery, found = connection.execute(_EFFECT, {"order_ids": _ids(commit.order_ids)}).one()
        if in_recovery:
            return "the server is a standby"
        if found == 0:
            return False  # on a primary, with the transaction over: it never committed
        if found != len(commit.order_ids):
            raise RuntimeError(f"{found} of the {len(commit.order_ids)} orders of one transaction exist")
        connection.execute(_PROOF_RECORD)
        connection.commit()  # returns once the synchronous standby has every earlier record
        return True


def _ids(order_ids: Sequence[uuid.UUID]) -> list[str]:
    return [str(order_id) for order_id in order_ids]
