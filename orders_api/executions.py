"""Execution reports from the exchange and how they move an order's execution state, free of any framework.

The feed repeats reports and delivers them out of order, so the rules are built to give the same
state whatever order a set of distinct reports arrives in: a fill adds its quantity and notional
(addition commutes), and the status follows the report with the highest ``seq`` seen so far, so
a late report never undoes a later one. Repeats are kept out by the caller (each ``exec_id`` is
applied once, :mod:`orders_api.adapters.postgres.execution_ledger`); every amount is a :class:`Decimal`
or an integer, never a float.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

#: Decimal places of ``average_price``.
AVERAGE_PRICE_PLACES = Decimal("0.0001")
#: The largest ``seq`` and quantity the ``executions`` columns hold (INTEGER, BIGINT).
_MAX_SEQ = 2**31 - 1
_MAX_QUANTITY = 2**63 - 1
#: A fill's price fits NUMERIC(18, 6) with at most 4 places (the feed's contract).
_MAX_PRICE = Decimal("999999999999.9999")


class ExecutionKind(enum.StrEnum):
    """What one report says happened to the order."""

    ACCEPTED = "accepted"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    CANCELLED = "cancelled"
    REJECTED = "rejected"

    @property
    def is_fill(self) -> bool:
        """Whether the report carries a quantity traded at a price."""
        return self in (ExecutionKind.PARTIAL_FILL, ExecutionKind.FILL)


class ExecutionStatus(enum.StrEnum):
    """Where the order stands on the exchange, as its latest report (by ``seq``) says."""

    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


#: The status each kind of report leaves the order in.
STATUS_AFTER: dict[ExecutionKind, ExecutionStatus] = {
    ExecutionKind.ACCEPTED: ExecutionStatus.ACCEPTED,
    ExecutionKind.PARTIAL_FILL: ExecutionStatus.PARTIALLY_FILLED,
    ExecutionKind.FILL: ExecutionStatus.FILLED,
    ExecutionKind.CANCELLED: ExecutionStatus.CANCELLED,
    ExecutionKind.REJECTED: ExecutionStatus.REJECTED,
}


class MalformedReportError(ValueError):
    """The message is not an execution report as the feed's contract describes one."""


@dataclass(frozen=True)
class ExecutionReport:
    """One report of the exchange's feed about one order."""

    exec_id: str
    order_id: uuid.UUID
    seq: int
    kind: ExecutionKind
    quantity: int
    price: Decimal | None
    reported_at: datetime

    @property
    def notional(self) -> Decimal:
        """Quantity times price: what the fill traded; zero for a report that is not a fill."""
        return Decimal(self.quantity) * self.price if self.price is not None else Decimal(0)


@dataclass(frozen=True)
class ExecutionState:
    """What the applied reports say about an order: its fills so far and its latest status."""

    filled_quantity: int = 0
    filled_notional: Decimal = Decimal(0)
    status: ExecutionStatus | None = None
    #: ``seq`` of the report that set :attr:`status`; 0 before any.
    seq: int = 0

    def applied(self, report: ExecutionReport) -> ExecutionState:
        """The state once ``report``, never applied before, is applied, whatever its place in the feed.

        A fill counts whenever it arrives; the status moves only to a report later (by ``seq``)
        than the one that set it.
        """
        state = self
        if report.kind.is_fill:
            state = replace(
                state,
                filled_quantity=state.filled_quantity + report.quantity,
                filled_notional=state.filled_notional + report.notional,
            )
        if report.seq > state.seq:
            state = replace(state, status=STATUS_AFTER[report.kind], seq=report.seq)
        return state

    def applied_all(self, reports: Iterable[ExecutionReport]) -> ExecutionState:
        """The state once every one of ``reports`` (distinct, never applied before) is applied."""
        state = self
        for report in reports:
            state = state.applied(report)
        return state

    @property
    def average_price(self) -> Decimal | None:
        """The average fill price, rounded half-even to 4 places; ``None`` before any fill."""
        if self.filled_quantity == 0:
            return None
        return (self.filled_notional / Decimal(self.filled_quantity)).quantize(
            AVERAGE_PRICE_PLACES, rounding=ROUND_HALF_EVEN
        )


def average_price(filled_quantity: int, filled_notional: Decimal) -> Decimal | None:
    """The average fill price of an order, as :attr:`ExecutionState.average_price`."""
    return ExecutionState(filled_quantity=filled_quantity, filled_notional=filled_notional).average_price


def fields_of(report: ExecutionReport) -> dict[str, object]:
    """The report as the feed's JSON object holds it: what :func:`report_from_fields` reads back."""
    return {
        "exec_id": report.exec_id,
        "order_id": str(report.order_id),
        "seq": report.seq,
        "kind": report.kind.value,
        "quantity": report.quantity,
        "price": None if report.price is None else str(report.price),
        "ts": report.reported_at.isoformat(),
    }


def report_from_fields(fields: object) -> ExecutionReport:
    """The report one decoded JSON object holds (one element of a partition message's array).

    :raises MalformedReportError: ``fields`` is not an object, or breaks the feed's contract: a
        fill without a positive quantity and a positive price, another kind with a quantity or a
        price, a ``seq`` below 1, a timestamp without a time zone, text that is not text (a NUL,
        a lone surrogate).
    """
    if not isinstance(fields, dict):
        raise MalformedReportError("not a JSON object")
    try:
        report = ExecutionReport(
            exec_id=_text(fields, "exec_id"),
            order_id=uuid.UUID(_text(fields, "order_id")),
            seq=_integer(fields, "seq", 1, _MAX_SEQ),
            kind=ExecutionKind(_text(fields, "kind")),
            quantity=_integer(fields, "quantity", 0, _MAX_QUANTITY),
            price=_price(fields.get("price")),
            reported_at=datetime.fromisoformat(_text(fields, "ts")),
        )
    except (ValueError, TypeError) as error:
        raise MalformedReportError(str(error)) from None
    if report.reported_at.tzinfo is None:
        raise MalformedReportError("ts has no time zone")
    if report.kind.is_fill:
        if report.quantity < 1 or report.price is None or report.price <= 0:
            raise MalformedReportError(f"{report.kind} needs a positive quantity and price")
    elif report.quantity != 0 or report.price is not None:
        raise MalformedReportError(f"{report.kind} carries no quantity or price")
    return report


def _text(fields: dict[str, Any], name: str) -> str:
    """The field as text, if it is text: non-empty, without NUL, and encodable as UTF-8.

    JSON can carry a NUL character and a lone surrogate (as escapes), but neither is text
    an identifier or a timestamp holds, nor text PostgreSQL stores (psycopg2 raises a bare
    ``ValueError`` for both, before the statement is even sent). The contract's parser owns
    the rule rather than the database adapter: it is a property of the value, judged once per
    report, so such a report is *malformed*, dropped alone, and its batch stays one transaction.
    """
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise MalformedReportError(f"{name} must be a non-empty string")
    if "\x00" in value:
        raise MalformedReportError(f"{name} holds a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedReportError(f"{name} holds a lone surrogate, which is not text") from None
    return value


def _integer(fields: dict[str, Any], name: str, low: int, high: int) -> int:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedReportError(f"{name} must be an integer from {low} to {high}")
    return value


def _price(value: object) -> Decimal | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedReportError("price must be a decimal string or null")
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise MalformedReportError(f"price {value!r} is not a decimal") from None
    if not price.is_finite() or price.as_tuple().exponent < -4 or abs(price) > _MAX_PRICE:  # type: ignore[operator]
        raise MalformedReportError(f"price {value!r} is out of range")
    return price
