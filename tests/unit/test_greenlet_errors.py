"""A greenlet that fails is logged, in one record with its traceback, not printed by gevent's hub."""

from __future__ import annotations

import logging

import gevent
import pytest

from workers.greenlet_errors import log_greenlet_errors

pytestmark = pytest.mark.unit


def test_a_failed_greenlets_error_is_a_log_record_with_its_traceback(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    log_greenlet_errors()

    def fail() -> None:
        raise RuntimeError("boom")

    with caplog.at_level(logging.ERROR, logger="gevent"):
        gevent.spawn(fail).join()

    [record] = [record for record in caplog.records if record.name == "gevent"]
    assert record.getMessage().endswith("failed")
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert "Traceback" not in capsys.readouterr().err
