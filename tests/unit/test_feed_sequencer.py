"""The ingestor's bookkeeping: feed_seq order, repeats dropped, resume point over confirmed runs only."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orders_api.adapters.exchange.feed_client import (
    MAX_RAW_CHARS,
    FeedReport,
    UnreadableReport,
    parse_frame,
    resume_url,
)
from orders_api.service_layer.ingest import FeedSequencer, GapWatch, SkipReason, full_jitter_backoff

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


GOOD = '{"feed_seq": 2, "exec_id": "e", "order_id": "00000000-0000-0000-0000-000000000001"}'


@pytest.mark.parametrize(
    ("frame", "feed_seq"),
    [
        ('{"feed_seq": 1}', None),
        ("not json", None),
        (f"[1, {GOOD}]", None),
        (f'[{{"feed_seq": 0, "exec_id": "e", "order_id": "x"}}, {GOOD}]', None),
        (f'[{{"feed_seq": "1", "exec_id": "e"}}, {GOOD}]', None),
        (f'[{{"feed_seq": 1, "exec_id": "e", "order_id": "nope"}}, {GOOD}]', 1),
        (f'[{{"feed_seq": 1, "exec_id": "e"}}, {GOOD}]', 1),
        (f'[{{"feed_seq": 1, "exec_id": "", "order_id": "x"}}, {GOOD}]', 1),
    ],
)
def test_a_report_outside_the_contract_comes_back_raw_in_its_place_beside_its_neighbours(
    frame: str, feed_seq: int | None
) -> None:
    """Catches one bad report costing its whole frame (and, by the gap it left, the feed)."""
    parsed = parse_frame(frame)
    unreadable = parsed[0]
    assert isinstance(unreadable, UnreadableReport)
    assert unreadable.feed_seq == feed_seq
    assert unreadable.error
    assert [item.feed_seq for item in parsed[1:] if isinstance(item, FeedReport)] == [2] * (len(parsed) - 1)


def test_an_unreadable_frame_is_kept_for_the_log_cut_to_a_bound() -> None:
    (unreadable,) = parse_frame("x" * (MAX_RAW_CHARS + 10))
    assert isinstance(unreadable, UnreadableReport)
    assert unreadable.raw.startswith("x" * MAX_RAW_CHARS)
    assert unreadable.raw.endswith(f"({MAX_RAW_CHARS + 10} characters in all)")


def test_a_skipped_position_is_passed_by_the_resume_point_without_a_report() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(0)
    sequencer.offer(1, "r1")
    assert sequencer.skip(2)
    assert not sequencer.skip(2), "a repeat of the same bad report is skipped once"
    sequencer.offer(3, "r3")
    run = sequencer.take(10)
    assert run is not None
    assert (run.first, run.last, run.reports, run.skipped) == (1, 3, ["r1", "r3"], {2: SkipReason.MALFORMED})
    sequencer.confirmed(run)
    assert sequencer.watermark == 3
    assert not sequencer.skip(2)


def test_a_readable_copy_that_comes_before_its_run_is_handed_over_takes_the_skips_place() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(0)
    sequencer.skip(1)
    assert sequencer.offer(1, "r1")
    assert not sequencer.skip(1)
    run = sequencer.take(10)
    assert run is not None and run.reports == ["r1"] and run.skipped == {}


def test_a_gap_declared_missing_is_skipped_up_to_the_first_report_held() -> None:
    sequencer: FeedSequencer[str] = FeedSequencer(4)
    assert sequencer.skip_gap() == range(0)
    sequencer.offer(8, "r8")
    sequencer.offer(10, "r10")
    assert sequencer.gap_at == 5
    assert sequencer.skip_gap() == range(5, 8)
    assert sequencer.gap_at is None
    run = sequencer.take(10)
    assert run is not None
    assert (run.first, run.last, run.reports) == (5, 8, ["r8"])
    assert run.skipped == dict.fromkeys((5, 6, 7), SkipReason.MISSING)
    sequencer.confirmed(run)
    assert sequencer.gap_at == 9, "only the first gap is skipped"


def test_holds_nothing_beyond_the_bound_behind_a_gap_and_takes_it_once_the_gap_moves() -> None:
    sequencer: FeedSequencer[int] = FeedSequencer(0, max_held=10)
    for feed_seq in range(2, 30):
        sequencer.offer(feed_seq, feed_seq)
    assert sequencer.held == 9
    assert sequencer.deferred == 19
    sequencer.offer(1, 1)
    run = sequencer.take(100)
    assert run is not None and run.reports == list(range(1, 11))
    sequencer.confirmed(run)
    assert sequencer.offer(11, 11), "a report deferred earlier is held when the feed sends it again"


def test_reports_deferred_beyond_the_bound_leave_a_gap_once_everything_held_is_handed_over() -> None:
    # One frame larger than the bound: what lies beyond is not held, and only a reconnect brings
    # it again. Nothing held behind it, it must still count as a gap, or the reader waits forever
    # on a connection that has sent everything.
    sequencer: FeedSequencer[int] = FeedSequencer(0, max_held=10)
    for feed_seq in range(1, 26):
        sequencer.offer(feed_seq, feed_seq)
    run = sequencer.take(100)
    assert run is not None and run.reports == list(range(1, 11))
    sequencer.confirmed(run)

    assert sequencer.held == 0
    assert sequencer.gap_at == 11
    assert sequencer.skip_gap() == range(0), "nothing is declared missing that was read"


def test_no_gap_once_every_report_read_is_handed_over() -> None:
    sequencer: FeedSequencer[int] = FeedSequencer(0, max_held=10)
    for feed_seq in range(1, 6):
        sequencer.offer(feed_seq, feed_seq)
    run = sequencer.take(100)
    assert run is not None
    sequencer.confirmed(run)

    assert sequencer.gap_at is None


def test_a_gap_is_declared_missing_only_after_connections_in_a_row_went_past_it() -> None:
    watch = GapWatch(passes=3)
    assert not watch.connection_ended(gap_at=5, highest_read=9)
    assert not watch.connection_ended(gap_at=5, highest_read=4), "did not go past it: not counted"
    assert not watch.connection_ended(gap_at=5, highest_read=9)
    assert watch.connection_ended(gap_at=5, highest_read=6)
    assert not watch.connection_ended(gap_at=5, highest_read=9), "counting starts over after a skip"


def test_a_gap_that_moves_or_fills_starts_the_count_over() -> None:
    watch = GapWatch(passes=2)
    assert not watch.connection_ended(gap_at=5, highest_read=9)
    assert not watch.connection_ended(gap_at=7, highest_read=9)
    assert not watch.connection_ended(gap_at=None, highest_read=9)
    assert not watch.connection_ended(gap_at=7, highest_read=9)
    assert watch.connection_ended(gap_at=7, highest_read=9)


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
