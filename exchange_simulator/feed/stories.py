"""What the exchange does with one order: its execution story, as the feed's contract tells it.

Per order: ``accepted`` (seq 1), or ``rejected`` (seq 1, the end); then zero or more
``partial_fill``; then ``fill`` (the fill that completes the quantity) or ``cancelled`` (the
rest is cancelled, the end). Fills add up to at most the order's quantity, exactly to it when
the story ends in ``fill``, and their prices respect a limit order's limit.

A story is a pure function of the order and the feed's seed (:func:`story_random`), so that a
simulator restarted in the middle of a story can regenerate it and send only what it had not
yet logged, instead of telling the order's story twice.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

#: Prices are decimal strings with this many decimals, as the contract allows (up to 4).
PRICE_EXPONENT = Decimal("0.0001")
#: Chance that the exchange rejects an order outright.
REJECT_PROBABILITY = 0.02
#: Chance that the exchange cancels what is left of an accepted order instead of filling it.
CANCEL_PROBABILITY = 0.1
#: Most partial fills before the last fill (or the cancellation) in a random story.
MAX_PARTIAL_FILLS = 4
#: Reference price of a market order (the stand-in knows no instrument's price).
MARKET_REFERENCE_PRICE = Decimal("100")
#: How far, as a fraction, a fill may land from its reference price.
PRICE_SPREAD = Decimal("0.02")


@dataclass(frozen=True)
class PlacedOrder:
    """What the exchange knows of an order it was sent: enough to tell its story."""

    id: uuid.UUID
    type: str
    side: str
    limit_price: Decimal | None
    quantity: int


@dataclass(frozen=True)
class Step:
    """One report of a story, before the feed gives it a position and a timestamp."""

    order_id: uuid.UUID
    seq: int
    kind: str
    quantity: int
    price: Decimal | None

    @property
    def exec_id(self) -> str:
        """Unique across the feed and stable across restarts: the order and the report's seq."""
        return f"{self.order_id}-{self.seq}"


def story_random(seed: int, order_id: uuid.UUID) -> random.Random:
    """The random source of one order's story: the same for the same seed and order, always."""
    return random.Random(f"{seed}:{order_id}")


def tell_story(order: PlacedOrder, rng: random.Random, fills_per_order: int | None = None) -> list[Step]:
    """The reports the exchange sends about ``order``, in seq order.

    :param fills_per_order: the benchmark's shape: every order accepted, then filled in exactly
        this many fills (so a run knows how many reports to expect); ``None`` for random stories.
    """
    if fills_per_order is None:
        if rng.random() < REJECT_PROBABILITY:
            return [Step(order.id, 1, "rejected", 0, None)]
        cancelled = rng.random() < CANCEL_PROBABILITY
        fills = rng.randint(0 if cancelled else 1, MAX_PARTIAL_FILLS + (0 if cancelled else 1))
    else:
        cancelled = False
        fills = fills_per_order
    fills = min(fills, order.quantity)
    quantities = _split(order.quantity, fills, rng, leave_some=cancelled)
    steps = [Step(order.id, 1, "accepted", 0, None)]
    for index, quantity in enumerate(quantities):
        last = index == len(quantities) - 1
        kind = "fill" if last and not cancelled else "partial_fill"
        steps.append(Step(order.id, len(steps) + 1, kind, quantity, fill_price(order, rng)))
    if cancelled:
        steps.append(Step(order.id, len(steps) + 1, "cancelled", 0, None))
    return steps


def _split(total: int, parts: int, rng: random.Random, leave_some: bool) -> list[int]:
    """``parts`` positive quantities adding up to ``total`` (to less than it when ``leave_some``)."""
    if parts == 0:
        return []
    budget = total - 1 if leave_some else total
    if budget < parts:
        return [1] * budget
    cuts = sorted(rng.sample(range(1, budget), parts - 1))
    return [high - low for low, high in zip([0, *cuts], [*cuts, budget], strict=True)]


def fill_price(order: PlacedOrder, rng: random.Random) -> Decimal:
    """A fill price that respects the order: a buy at or below its limit, a sell at or above it."""
    reference = order.limit_price if order.limit_price is not None else MARKET_REFERENCE_PRICE
    offset = reference * PRICE_SPREAD * Decimal(rng.random())
    if order.limit_price is None:
        price = reference + offset if rng.random() < 0.5 else reference - offset
        return price.quantize(PRICE_EXPONENT)
    if order.side == "buy":
        return (reference - offset).quantize(PRICE_EXPONENT, rounding=ROUND_FLOOR)
    return (reference + offset).quantize(PRICE_EXPONENT, rounding=ROUND_CEILING)
