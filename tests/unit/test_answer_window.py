"""The benchmark's duplicate window, read from log lines as the workers write them (JSON)."""

from __future__ import annotations

import json

import pytest

from bench.answer_window import windows_ms

pytestmark = pytest.mark.unit

ONE = "11111111-1111-1111-1111-111111111111"
TWO = "22222222-2222-2222-2222-222222222222"


def line(at: str, logger: str, message: str) -> str:
    """A worker's log line as orders_api.logging_setup writes it."""
    return json.dumps(
        {
            "timestamp": f"2026-12-02T07:00:{at}+00:00",
            "level": "INFO",
            "logger": logger,
            "message": message,
            "process": 1,
            "thread": "Thread-1",
        }
    )


def test_each_placements_window_runs_from_the_exchanges_answer_to_its_record() -> None:
    log = "\n".join(
        [
            line("00.100000", "workers.bootstrap", f"exchange placed order {ONE}"),
            line("00.090000", "workers.bootstrap", f"exchange placed order {TWO}"),
            "a line that is not JSON, as a killed process may leave",
            line("00.103000", "orders_api.service_layer.placement", f"order {ONE} placed on attempt 1"),
            line("01.090000", "orders_api.service_layer.placement", f"order {TWO} placed on attempt 2"),
        ]
    )

    assert windows_ms([log]) == pytest.approx([3.0, 1000.0])


def test_a_placement_whose_record_is_missing_has_no_window() -> None:
    log = line("00.100000", "workers.bootstrap", f"exchange placed order {ONE}")

    assert windows_ms([log]) == []
