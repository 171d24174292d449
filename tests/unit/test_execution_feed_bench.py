"""The execution-feed benchmark's pure parts: the end-to-end rate, the lags, the feed's log, the verdict."""

import json
import math

import pytest

from bench.execution_feed import FeedRun, end_to_end_rate, hot_frames, lags_ms, log_span, verdict

pytestmark = pytest.mark.unit


def _run(offered: float, rate: float, p99_ms: float, applied: int = 100) -> FeedRun:
    return FeedRun(offered, 100, applied, rate, rate, 1.0, 2.0, p99_ms, p99_ms, {})


def test_end_to_end_rate_runs_from_the_first_report_made_to_the_last_one_applied() -> None:
    # 10 reports applied between 1.5 s and 2.0 s after the first report was made at 0.0 s.
    applied = [1.5 + i / 20 for i in range(10)]

    assert end_to_end_rate(0.0, applied) == pytest.approx(10 / applied[-1])
    assert math.isnan(end_to_end_rate(0.0, []))
    assert math.isnan(end_to_end_rate(5.0, [5.0]))


def test_lags_are_applied_minus_reported_in_milliseconds_ascending() -> None:
    assert lags_ms([(10.0, 10.5), (10.0, 10.002), (11.0, 11.25)]) == pytest.approx([2.0, 250.0, 500.0])


def test_log_span_reads_only_the_reports_of_the_feeds_log() -> None:
    lines = [
        json.dumps({"order": {"id": "x", "placed_at": "2026-12-02T12:00:00+00:00"}}),
        json.dumps({"feed_seq": 1, "ts": "2026-12-02T12:00:01+00:00"}),
        "",
        json.dumps({"feed_seq": 2, "ts": "2026-12-02T12:00:03.500000+00:00"}),
    ]

    first, last, count = log_span(lines)

    assert (last - first, count) == (2.5, 2)
    with pytest.raises(ValueError, match="no report"):
        log_span(lines[:1])


@pytest.mark.parametrize(
    ("run", "met"),
    [
        (_run(5000, 5000.0, 999.9), True),
        (_run(5000, 4999.0, 10.0), False),  # a report/s short is short: no rounding up
        (_run(0, 9000.0, 1000.0), False),  # p99 must be under 1 s, not at it
        (_run(0, 9000.0, 10.0, applied=99), False),  # a report never applied
    ],
)
def test_the_target_is_met_only_to_the_letter(run: FeedRun, met: bool) -> None:
    assert run.target_met is met


def test_the_verdict_names_the_runs_that_met_the_target_or_says_missed() -> None:
    assert verdict([_run(5000, 4000.0, 10.0), _run(0, 6000.0, 900.0)]).endswith("MET at offered max")
    assert verdict([_run(5000, 4000.0, 10.0)]).endswith("MISSED in every run")


def test_hot_frames_give_each_sample_to_its_innermost_frame_or_innermost_frame_of_ours() -> None:
    collapsed = [
        "main;orders_api/ledger.py:apply;sqlalchemy:execute 6",
        "main;orders_api/executions.py:parse;json:decode 3",
        "main;pika:poll 1",
        "",
    ]

    own = {frame: share for share, frame in hot_frames(collapsed)}
    ours = {frame: share for share, frame in hot_frames(collapsed, "orders_api/")}

    assert own == pytest.approx({"sqlalchemy:execute": 0.6, "json:decode": 0.3, "pika:poll": 0.1})
    assert ours == pytest.approx(
        {"orders_api/ledger.py:apply": 0.6, "orders_api/executions.py:parse": 0.3, "pika:poll": 0.1}
    )
    assert hot_frames([]) == []
