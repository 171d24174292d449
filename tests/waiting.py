"""Waiting for a condition that another process or thread brings about, with a bound."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T | None],
    timeout_s: float,
    what: str,
    *,
    every_s: float = 0.05,
    state: Callable[[], str] | None = None,
) -> T:
    """Return what ``condition()`` gives once it is true; fail the test, naming ``what``, after ``timeout_s``.

    ``state`` describes what the test is waiting on, for the failure's message: a wait that
    times out only on a loaded machine is then explained by the one run that saw it.
    """
    deadline = time.monotonic() + timeout_s
    while not (outcome := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f"; {state()}" if state is not None else ""))
        time.sleep(every_s)
    return outcome
