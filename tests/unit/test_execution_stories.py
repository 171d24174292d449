"""Execution stories follow the feed's contract for any order, and the same seed tells the same story."""

from __future__ import annotations

import itertools
import random
import uuid
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange_simulator.feed.faults import ConnectionFaults, FaultSettings
from exchange_simulator.feed.stories import PlacedOrder, story_random, tell_story
from tests.execution_stories import assert_follows_contract

pytestmark = pytest.mark.unit

orders = st.builds(
    PlacedOrder,
    id=st.uuids(),
    type=st.sampled_from(["market", "limit"]),
    side=st.sampled_from(["buy", "sell"]),
    limit_price=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2),
    quantity=st.integers(min_value=1, max_value=10**9),
).map(
    lambda order: (
        order if order.type == "limit" else PlacedOrder(order.id, "market", order.side, None, order.quantity)
    )
)


@given(order=orders, seed=st.integers(min_value=0, max_value=2**32))
def test_every_random_story_follows_the_contract(order: PlacedOrder, seed: int) -> None:
    assert_follows_contract(order, tell_story(order, story_random(seed, order.id)))


@given(order=orders, fills=st.integers(min_value=1, max_value=20))
def test_bench_stories_are_accepted_then_filled_in_the_asked_number_of_fills(
    order: PlacedOrder, fills: int
) -> None:
    story = tell_story(order, story_random(0, order.id), fills_per_order=fills)
    assert_follows_contract(order, story)
    assert story[0].kind == "accepted"
    assert story[-1].kind == "fill"
    assert len(story) == 1 + min(fills, order.quantity)


def test_the_same_seed_tells_the_same_story_and_another_seed_varies_them() -> None:
    order_ids = [uuid.uuid4() for _ in range(50)]
    placed = [PlacedOrder(order_id, "limit", "buy", Decimal("10.00"), 100) for order_id in order_ids]
    first = [tell_story(order, story_random(1, order.id)) for order in placed]
    assert first == [tell_story(order, story_random(1, order.id)) for order in placed]
    assert first != [tell_story(order, story_random(2, order.id)) for order in placed]
    kinds = {step.kind for story in first for step in story}
    assert {"accepted", "partial_fill", "fill"} <= kinds


def test_a_clean_connection_sends_the_reports_as_they_are() -> None:
    reports = [str(n) for n in range(100)]
    assert ConnectionFaults(FaultSettings(), random.Random(0)).disorder(reports, more_coming=False) == reports
    assert ConnectionFaults(FaultSettings(), random.Random(0)).frames_before_drop() is None


def test_a_faulty_connection_repeats_and_reorders_but_loses_nothing() -> None:
    faults = ConnectionFaults(
        FaultSettings(repeat_probability=0.2, reorder_probability=0.2), random.Random(3)
    )
    reports = [str(n) for n in range(200)]
    sent = faults.disorder(reports[:100], more_coming=True) + faults.disorder(
        reports[100:], more_coming=False
    )
    assert set(sent) == set(reports)
    assert len(sent) > len(reports)
    assert any(int(later) < int(earlier) for earlier, later in itertools.pairwise(sent))


def test_a_report_held_back_to_be_swapped_is_sent_when_nothing_else_is_coming() -> None:
    faults = ConnectionFaults(FaultSettings(reorder_probability=1.0), random.Random(0))
    assert faults.disorder(["1", "2", "3"], more_coming=True) == ["2", "1"]
    assert faults.disorder(["4"], more_coming=False) == ["4", "3"]
    assert faults.disorder(["5"], more_coming=False) == ["5"]
