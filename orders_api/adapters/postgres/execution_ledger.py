"""Applies a batch of execution reports to PostgreSQL in the caller's transaction, each exactly once.

Three statements per batch, whatever its size: lock the batch's orders (reading their execution
state), insert the reports into ``executions`` with ``ON CONFLICT (exec_id) DO NOTHING
RETURNING exec_id``, and update the orders from the reports that insert newly stored. The
``executions`` table is the ledger that makes a repeat harmless: a report already applied (in
this batch or any earlier one) is not returned by the insert, so it changes nothing. How a new
report moves the order is :meth:`orders_api.executions.ExecutionState.applied`, so the rule
lives in one place and is unit-tested without a database.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from orders_api.adapters.postgres.tables import executions, orders
from orders_api.executions import ExecutionReport, ExecutionState, ExecutionStatus

_UUIDS: Final = postgresql.ARRAY(postgresql.UUID(as_uuid=True))

#: Locks the batch's orders, in id order so two transactions never wait on each other in a
#: cycle, and reads their execution state.
_LOCK_ORDERS: Final = (
    sa.select(
        orders.c.id,
        orders.c.filled_quantity,
        orders.c.filled_notional,
        orders.c.execution_status,
        orders.c.execution_seq,
    )
    .where(orders.c.id == sa.func.any(sa.bindparam("order_ids", type_=_UUIDS)))
    .order_by(orders.c.id)
    .with_for_update()
)

_REPORTS: Final = (
    sa.func.unnest(
        sa.bindparam("exec_ids", type_=postgresql.ARRAY(sa.Text)),
        sa.bindparam("order_ids", type_=_UUIDS),
        sa.bindparam("seqs", type_=postgresql.ARRAY(sa.Integer)),
        sa.bindparam("kinds", type_=postgresql.ARRAY(sa.Text)),
        sa.bindparam("quantities", type_=postgresql.ARRAY(sa.BigInteger)),
        sa.bindparam("prices", type_=postgresql.ARRAY(sa.Numeric(18, 6))),
        sa.bindparam("reported_ats", type_=postgresql.ARRAY(sa.DateTime(timezone=True))),
    )
    .table_valued("exec_id", "order_id", "seq", "kind", "quantity", "price", "reported_at")
    .render_derived()
)
#: Stores the reports not stored before and returns their ids; arrays (one per column) make
#: it one statement with seven parameters, however many reports the batch holds.
_INSERT_NEW: Final = (
    postgresql.insert(executions)
    .from_select(
        ["exec_id", "order_id", "seq", "kind", "quantity", "price", "reported_at"],
        sa.select(
            _REPORTS.c.exec_id,
            _REPORTS.c.order_id,
            _REPORTS.c.seq,
            _REPORTS.c.kind,
            _REPORTS.c.quantity,
            _REPORTS.c.price,
            _REPORTS.c.reported_at,
        ),
    )
    .on_conflict_do_nothing(index_elements=["exec_id"])
    .returning(executions.c.exec_id)
)

_STATES: Final = (
    sa.func.unnest(
        sa.bindparam("ids", type_=_UUIDS),
        sa.bindparam("filled_quantities", type_=postgresql.ARRAY(sa.BigInteger)),
        sa.bindparam("filled_notionals", type_=postgresql.ARRAY(sa.Numeric(30, 6))),
        sa.bindparam("statuses", type_=postgresql.ARRAY(sa.Text)),
        sa.bindparam("status_seqs", type_=postgresql.ARRAY(sa.Integer)),
    )
    .table_valued("id", "filled_quantity", "filled_notional", "execution_status", "execution_seq")
    .render_derived()
)
#: Writes the new execution state of every order the batch changed, in one statement.
_UPDATE_STATES: Final = (
    sa.update(orders)
    .where(orders.c.id == _STATES.c.id)
    .values(
        {
            orders.c.filled_quantity: _STATES.c.filled_quantity,
            orders.c.filled_notional: _STATES.c.filled_notional,
            orders.c.execution_status: _STATES.c.execution_status,
            orders.c.execution_seq: _STATES.c.execution_seq,
            orders.c.updated_at: sa.func.now(),
        }
    )
)


@dataclass(frozen=True)
class AppliedBatch:
    """What one batch did: reports newly applied, repeats, and reports whose order is unknown."""

    new: list[ExecutionReport]
    repeated: int
    unknown_order: list[ExecutionReport] = field(default_factory=list)

    @property
    def applied(self) -> int:
        """How many reports the batch applied for the first time."""
        return len(self.new)


def merged(outcomes: Sequence[AppliedBatch]) -> AppliedBatch:
    """What several batches did, as one."""
    return AppliedBatch(
        new=[report for outcome in outcomes for report in outcome.new],
        repeated=sum(outcome.repeated for outcome in outcomes),
        unknown_order=[report for outcome in outcomes for report in outcome.unknown_order],
    )


def apply_reports(connection: sa.Connection, reports: Sequence[ExecutionReport]) -> AppliedBatch:
    """Apply every report of ``reports`` not applied before, within the connection's open transaction.

    A report whose order is not in the database is left out and returned in
    :attr:`AppliedBatch.unknown_order`, for the caller to decide about. Never commits.
    """
    order_ids = sorted({report.order_id for report in reports})
    states = {
        row.id: ExecutionState(
            filled_quantity=row.filled_quantity,
            filled_notional=row.filled_notional,
            status=None if row.execution_status is None else ExecutionStatus(row.execution_status),
            seq=row.execution_seq,
        )
        for row in connection.execute(_LOCK_ORDERS, {"order_ids": order_ids})
    }
    unknown = [report for report in reports if report.order_id not in states]
    distinct = list({report.exec_id: report for report in reports if report.order_id in states}.values())
    if not distinct:
        return AppliedBatch(new=[], repeated=len(reports) - len(unknown), unknown_order=unknown)
    inserted = set(connection.execute(_INSERT_NEW, _columns(distinct)).scalars())
    new = [report for report in distinct if report.exec_id in inserted]
    changed: dict[uuid.UUID, ExecutionState] = {}
    for report in new:
        changed[report.order_id] = changed.get(report.order_id, states[report.order_id]).applied(report)
    if changed:
        connection.execute(_UPDATE_STATES, _state_columns(changed))
    return AppliedBatch(new=new, repeated=len(reports) - len(unknown) - len(new), unknown_order=unknown)


def _columns(reports: Sequence[ExecutionReport]) -> dict[str, list[object]]:
    return {
        "exec_ids": [report.exec_id for report in reports],
        "order_ids": [report.order_id for report in reports],
        "seqs": [report.seq for report in reports],
        "kinds": [report.kind.value for report in reports],
        "quantities": [report.quantity for report in reports],
        "prices": [report.price for report in reports],
        "reported_ats": [report.reported_at for report in reports],
    }


def _state_columns(states: dict[uuid.UUID, ExecutionState]) -> dict[str, list[object]]:
    return {
        "ids": list(states),
        "filled_quantities": [state.filled_quantity for state in states.values()],
        "filled_notionals": [state.filled_notional for state in states.values()],
        "statuses": [None if state.status is None else state.status.value for state in states.values()],
        "status_seqs": [state.seq for state in states.values()],
    }
