"""A partition message's body: the reports it carries, in order, whichever form it was published in."""

from __future__ import annotations

import pytest

from orders_api.adapters.rabbitmq.execution_messages import (
    MalformedMessageError,
    decode_reports,
    encode_reports,
)


def test_the_reports_come_back_in_the_order_they_were_put_in() -> None:
    reports = [{"exec_id": f"x-{n}", "seq": n, "price": "1.5000"} for n in range(1, 6)]
    assert decode_reports(encode_reports(reports)) == reports


def test_a_single_report_object_is_one_report() -> None:
    """The form published before the ingestor batched: still applied after an upgrade, not dropped."""
    assert decode_reports(b'{"exec_id": "x-1"}') == [{"exec_id": "x-1"}]


@pytest.mark.parametrize("body", [b"not json", b'{"exec_id": ', b"17", b'"text"', b"null", b"\xff"])
def test_a_body_that_is_neither_an_array_nor_an_object_is_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        decode_reports(body)
