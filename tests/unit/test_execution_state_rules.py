"""How execution reports move an order's execution state: order-independent, forward only, exact."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders_api.executions import (
    ExecutionKind,
    ExecutionReport,
    ExecutionState,
    ExecutionStatus,
    MalformedReportError,
    average_price,
    fields_of,
    report_from_fields,
)

ORDER = uuid.UUID("00000000-0000-4000-8000-000000000001")
AT = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


def report(seq: int, kind: ExecutionKind, quantity: int = 0, price: str | None = None) -> ExecutionReport:
    return ExecutionReport(
        exec_id=f"e-{seq}",
        order_id=ORDER,
        seq=seq,
        kind=kind,
        quantity=quantity,
        price=None if price is None else Decimal(price),
        reported_at=AT,
    )


#: An order of 10 accepted, filled in three parts at prices with 4 decimals.
STORY = [
    report(1, ExecutionKind.ACCEPTED),
    report(2, ExecutionKind.PARTIAL_FILL, 3, "150.2501"),
    report(3, ExecutionKind.PARTIAL_FILL, 3, "150.1000"),
    report(4, ExecutionKind.FILL, 4, "0.0001"),
]


def test_a_straight_replay_adds_the_fills_exactly_and_ends_in_the_last_status() -> None:
    state = ExecutionState().applied_all(STORY)

    assert state == ExecutionState(
        filled_quantity=10,
        filled_notional=Decimal("3") * Decimal("150.2501") + Decimal("450.3000") + Decimal("0.0004"),
        status=ExecutionStatus.FILLED,
        seq=4,
    )
    assert state.filled_notional == Decimal("901.0507")


@given(st.permutations(STORY))
def test_any_arrival_order_gives_the_state_of_the_straight_replay(arrival: list[ExecutionReport]) -> None:
    assert ExecutionState().applied_all(arrival) == ExecutionState().applied_all(STORY)


def test_a_late_report_never_undoes_a_later_status() -> None:
    filled = ExecutionState().applied(STORY[3])

    late = filled.applied(STORY[0]).applied(STORY[1])

    assert late.status is ExecutionStatus.FILLED
    assert late.seq == 4
    assert late.filled_quantity == 4 + 3


def test_a_late_fill_still_counts_though_it_leaves_the_status_alone() -> None:
    cancelled = ExecutionState().applied(report(3, ExecutionKind.CANCELLED))

    state = cancelled.applied(report(2, ExecutionKind.PARTIAL_FILL, 5, "10.5"))

    assert state == ExecutionState(5, Decimal("52.5"), ExecutionStatus.CANCELLED, 3)


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        (ExecutionKind.ACCEPTED, ExecutionStatus.ACCEPTED),
        (ExecutionKind.PARTIAL_FILL, ExecutionStatus.PARTIALLY_FILLED),
        (ExecutionKind.FILL, ExecutionStatus.FILLED),
        (ExecutionKind.CANCELLED, ExecutionStatus.CANCELLED),
        (ExecutionKind.REJECTED, ExecutionStatus.REJECTED),
    ],
)
def test_each_kind_of_report_sets_its_status(kind: ExecutionKind, status: ExecutionStatus) -> None:
    quantity, price = (1, "1") if kind.is_fill else (0, None)

    assert ExecutionState().applied(report(1, kind, quantity, price)).status is status


def test_the_average_price_rounds_half_even_to_four_places_and_is_none_before_a_fill() -> None:
    assert average_price(0, Decimal(0)) is None
    assert average_price(2, Decimal("0.0005")) == Decimal("0.0002")  # 0.00025: a tie, to even
    assert average_price(2, Decimal("0.0003")) == Decimal("0.0002")  # 0.00015: a tie, to even
    assert average_price(2, Decimal("0.00051")) == Decimal("0.0003")  # 0.000255: above the tie
    assert average_price(3, Decimal("100")) == Decimal("33.3333")


def _fields(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "feed_seq": 17,
        "exec_id": "x-1",
        "order_id": str(ORDER),
        "seq": 2,
        "kind": "partial_fill",
        "quantity": 5,
        "price": "150.2500",
        "ts": "2026-12-02T11:00:00.123456+00:00",
    }
    fields.update(changes)
    return fields


def test_a_report_of_the_feed_is_read_exactly() -> None:
    assert report_from_fields(_fields()) == ExecutionReport(
        exec_id="x-1",
        order_id=ORDER,
        seq=2,
        kind=ExecutionKind.PARTIAL_FILL,
        quantity=5,
        price=Decimal("150.2500"),
        reported_at=datetime(2026, 12, 2, 11, 0, 0, 123456, tzinfo=UTC),
    )


def test_a_report_written_back_as_the_feeds_object_reads_back_the_same() -> None:
    report = report_from_fields(_fields())
    assert report_from_fields(fields_of(report)) == report
    assert fields_of(report_from_fields(_fields(price=None, kind="accepted", quantity=0)))["price"] is None


@pytest.mark.parametrize(
    "fields",
    [
        1,
        [_fields()],
        _fields(exec_id=""),
        _fields(order_id="nope"),
        _fields(seq=0),
        _fields(seq="2"),
        _fields(seq=True),
        _fields(kind="filled"),
        _fields(quantity=0),
        _fields(price=None),
        _fields(price=150.25),
        _fields(price="-1"),
        _fields(price="1.00001"),
        _fields(price="NaN"),
        _fields(kind="accepted", quantity=0, price="1"),
        _fields(kind="cancelled", quantity=3, price=None),
        _fields(ts="2026-12-02T11:00:00"),
        _fields(ts="yesterday"),
        _fields(exec_id="nul\u0000inside"),
        _fields(exec_id="\ud800"),
        _fields(kind="fill\u0000"),
        _fields(ts="2026-12-02T11:00:00+00:00\udfff"),
    ],
)
def test_a_report_breaking_the_contract_is_malformed(fields: object) -> None:
    with pytest.raises(MalformedReportError):
        report_from_fields(fields)
