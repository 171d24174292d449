"""The benchmark's duplicate window, read from log lines as the workers write them."""

from __future__ import annotations

import pytest

from bench.answer_window import windows_ms

pytestmark = pytest.mark.unit

ONE = "11111111-1111-1111-1111-111111111111"
TWO = "22222222-2222-2222-2222-222222222222"
EXCHANGE = "[PID 1] [Thread-1] [workers.bootstrap] [INFO] exchange placed order"
RECORD = "[PID 1] [Thread-1] [orders_api.service_layer.placement] [INFO] order"


def test_each_placements_window_runs_from_the_exchanges_answer_to_its_record() -> None:
    log = "\n".join(
        [
            f"[2026-12-02 07:00:00,100] {EXCHANGE} {ONE}",
            f"[2026-12-02 07:00:00,090] {EXCHANGE} {TWO}",
            f"[2026-12-02 07:00:00,103] {RECORD} {ONE} placed on attempt 1",
            f"[2026-12-02 07:00:01,090] {RECORD} {TWO} placed on attempt 2",
        ]
    )

    assert windows_ms([log]) == pytest.approx([3.0, 1000.0])


def test_a_placement_whose_record_is_missing_has_no_window() -> None:
    log = (
        f"[2026-12-02 07:00:00,100] [PID 1] [Thread-1] [workers.bootstrap] [INFO] exchange placed order {ONE}"
    )

    assert windows_ms([log]) == []
