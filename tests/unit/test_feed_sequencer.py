"""The ingestor's bookkeeping: feed_seq order, repeats dropped, resume point over confirmed runs only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders_api.adapters.feed_client import MalformedReportError, parse_frame, resume_url
from orders_api.service_layer.ingest import FeedSequencer, full_jitter_backoff

pytestmark = pytest.mark.unit


def test_hands_over_reports_in_feed_seq_order_whatever_order_they_arrive_in() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(0)
    for feed_seq in (3, 1, 2, 5):
        sequencer.offer(feed_seq, f"r{feed_seq}")
    run = sequencer.take(10)
    assert run is not None
    assert (run.first, run.last, run.reports) == (1, 3, ["r1", "r2", "r3"])
    assert sequencer.has_gap()


def test_resume_point_moves_only_when_the_run_is_confirmed() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(10)
    for feed_seq in (11, 12):
        sequencer.offer(feed_seq, "r")
    run = sequencer.take(10)
    assert run is not None
    assert sequencer.watermark == 10
    sequencer.confirmed(run)
    assert sequencer.watermark == 12


def test_resume_point_never_passes_a_report_that_has_not_arrived() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(0)
    sequencer.offer(2, "r2")
    assert sequencer.take(10) is None
    assert sequencer.watermark == 0


def test_drops_repeats_of_held_handed_over_and_confirmed_reports() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(5)
    assert not sequencer.offer(5, "old")
    assert sequencer.offer(6, "r6")
    assert not sequencer.offer(6, "r6 again")
    run = sequencer.take(1)
    assert run is not None
    assert not sequencer.offer(6, "r6 while in flight")
    sequencer.confirmed(run)
    assert not sequencer.offer(6, "r6 after confirm")
    assert sequencer.held == 0


def test_takes_at_most_the_limit_and_only_one_run_at_a_time() -> None:
    sequencer: FeedSequencer[int] = FeedSequencer(0)
    for feed_seq in range(1, 8):
        sequencer.offer(feed_seq, feed_seq)
    run = sequencer.take(3)
    assert run is not None and run.reports == [1, 2, 3]
    with pytest.raises(RuntimeError):
        sequencer.take(3)
    sequencer.confirmed(run)
    assert sequencer.ready() == 4


def test_shuffled_repeated_feed_ends_with_every_report_once_in_order() -> None:
    shuffled = list(range(1, 1001)) * 2
    random.Random(7).shuffle(shuffled)
    sequencer: FeedSequencer[int] = FeedSequencer(0)
    published: list[int] = []
    for feed_seq in shuffled:
        sequencer.offer(feed_seq, feed_seq)
        run = sequencer.take(50)
        if run is not None:
            published.extend(run.reports)
            sequencer.confirmed(run)
    assert published == list(range(1, 1001))
    assert sequencer.watermark == 1000


@pytest.mark.parametrize(("attempt", "ceiling"), [(0, 0.1), (1, 0.2), (4, 1.6), (5, 3.0), (10_000, 3.0)])
def test_backoff_is_a_full_jitter_draw_below_the_capped_ceiling(attempt: int, ceiling: float) -> None:
    ceilings: list[float] = []

    def highest(low: float, high: float) -> float:
        ceilings.append(high)
        return high

    delay = full_jitter_backoff(attempt, base_s=0.1, cap_s=3.0, uniform=highest)
    assert delay == ceilings[0] == pytest.approx(ceiling)


def test_resume_url_replaces_any_from_and_keeps_the_rest() -> None:
    assert resume_url("ws://feed:8765/executions?from=3&x=1", 42) == "ws://feed:8765/executions?x=1&from=42"


@pytest.mark.parametrize(
    "frame",
    [
        '{"feed_seq": 1}',
        "[1]",
        '[{"feed_seq": 0, "exec_id": "e", "order_id": "00000000-0000-0000-0000-000000000001"}]',
        '[{"feed_seq": 1, "exec_id": "e", "order_id": "nope"}]',
        "not json",
    ],
)
def test_rejects_frames_outside_the_contract(frame: str) -> None:
    with pytest.raises(MalformedReportError):
        parse_frame(frame)


@given(
    arrivals=st.lists(st.integers(min_value=1, max_value=60), max_size=120),
    takes=st.lists(st.integers(min_value=1, max_value=10), max_size=20),
)
def test_ready_counts_the_contiguous_reports_however_they_arrived(
    arrivals: list[int], takes: list[int]
) -> None:
    sequencer: FeedSequencer[int] = FeedSequencer(resume_from=0)
    handed_over = 0
    for step, feed_seq in enumerate(arrivals):
        sequencer.offer(feed_seq, feed_seq)
        if takes and step % 7 == 0:
            run = sequencer.take(takes[step % len(takes)])
            if run is not None:
                handed_over = run.last
                sequencer.confirmed(run)
        held = {seq for seq in arrivals[: step + 1] if seq > handed_over}
        contiguous = 0
        while handed_over + contiguous + 1 in held:
            contiguous += 1
        assert sequencer.ready() == contiguous
