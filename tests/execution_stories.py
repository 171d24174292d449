"""The contract of one order's execution story, checked by the unit and the integration tests."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from exchange_simulator.feed.stories import PlacedOrder, Step

#: Kinds that end a story.
TERMINAL_KINDS = frozenset({"fill", "cancelled", "rejected"})


def step_of(report: Mapping[str, Any]) -> Step:
    """A report of the feed as the story step it tells."""
    price = report["price"]
    return Step(
        order_id=uuid.UUID(report["order_id"]),
        seq=int(report["seq"]),
        kind=str(report["kind"]),
        quantity=int(report["quantity"]),
        price=None if price is None else Decimal(price),
    )


def assert_follows_contract(order: PlacedOrder, story: list[Step]) -> None:
    """One order's whole story, in seq order: what the applier relies on."""
    assert [step.seq for step in story] == list(range(1, len(story) + 1)), story
    assert story[0].kind in {"accepted", "rejected"}
    assert story[-1].kind in TERMINAL_KINDS
    assert all(step.kind == "partial_fill" for step in story[1:-1])
    fills = [step for step in story if step.kind in {"partial_fill", "fill"}]
    assert all(step.quantity > 0 and step.price is not None and step.price > 0 for step in fills)
    assert all(step.quantity == 0 and step.price is None for step in story if step not in fills)
    filled = sum(step.quantity for step in fills)
    assert filled == order.quantity if story[-1].kind == "fill" else filled < order.quantity
    assert len({step.exec_id for step in story}) == len(story)
    for step in fills:
        assert step.price is not None
        assert step.price == step.price.quantize(Decimal("0.0001"))
        if order.limit_price is not None and order.side == "buy":
            assert step.price <= order.limit_price
        if order.limit_price is not None and order.side == "sell":
            assert step.price >= order.limit_price
