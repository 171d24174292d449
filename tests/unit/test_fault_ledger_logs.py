"""The fault suite's ledger reads the workers' JSON log lines by their message."""

from __future__ import annotations

import json

import pytest

from tests.faults.ledger import exchange_record

pytestmark = pytest.mark.unit

ONE = "11111111-1111-1111-1111-111111111111"
TWO = "22222222-2222-2222-2222-222222222222"


def log(*messages: str, cut_short: bool = False) -> str:
    """A worker run's log as orders_api.logging_setup writes it; ``cut_short``: killed mid-line."""
    lines = [
        json.dumps({"timestamp": "2026-12-02T07:00:00+00:00", "level": "INFO", "message": m})
        for m in messages
    ]
    return "\n".join(lines) + ("\n" + lines[-1][:20] if cut_short else "\n")


def test_calls_successes_records_and_interrupted_calls_come_from_the_messages() -> None:
    first_run = log(f"exchange call for order {ONE}", f"exchange call for order {TWO}", cut_short=True)
    second_run = log(
        f"exchange call for order {ONE}",
        f"exchange placed order {ONE}",
        f"order {ONE} placed on attempt 2",
        f"Failed to process message place_order('{TWO}') with unhandled exception.",
        f"exchange call for order {ONE}",
    )

    record = exchange_record([first_run, second_run], ())

    assert record.calls == {ONE: 3, TWO: 1}
    assert record.logged_successes == {ONE: 1}
    assert record.called_after_placed == {ONE}
    assert record.interrupted == {ONE, TWO}


def test_a_line_that_is_not_json_fails_the_ledger_loudly() -> None:
    with pytest.raises(AssertionError, match="not a JSON object"):
        exchange_record([f"[2026-12-02 07:00:00,000] [INFO] exchange call for order {ONE}\n"], ())


def test_a_takeover_of_a_claim_abandoned_mid_placement_is_read_as_a_reported_possible_duplicate() -> None:
    record = exchange_record(
        [
            log(
                f"order {ONE}: attempt 1 abandoned mid-placement, taken over by attempt 2;"
                " the exchange may hold the order already",
                f"order {TWO} placed on attempt 1",
            )
        ],
        (),
    )

    assert record.taken_over == {ONE}
