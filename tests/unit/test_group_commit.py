"""Group commit: who goes into which batch, and what each submitter is told.

The processing function is a fake that records its batches; a gate holds the first batch
open so that later submissions pile up behind it, as they do under load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from orders_api.service_layer.group_commit import GroupCommit, GroupCommitTimeoutError

pytestmark = pytest.mark.unit

#: Seconds any wait in these tests may take before the test fails instead of hanging.
TIMEOUT_S = 5.0


class RecordingProcess:
    """Records each batch; the first one waits for :attr:`gate`; raises :attr:`fail_with` when set."""

    def __init__(self, *, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.first_started = threading.Event()
        self.fail_with: Exception | None = None
        if not hold_first:
            self.gate.set()

    def __call__(self, batch: list[int]) -> None:
        self.batches.append(batch)
        if len(self.batches) == 1:
            self.first_started.set()
            assert self.gate.wait(TIMEOUT_S), "the test never opened the gate"
        if self.fail_with is not None:
            raise self.fail_with


def submit_in_threads(
    subject: GroupCommit[int], items: list[int]
) -> tuple[list[threading.Thread], dict[int, object]]:
    """Submit each item from a thread of its own; the outcomes (None or the error) land in the dict."""
    outcomes: dict[int, object] = {}

    def submit(item: int) -> None:
        try:
            subject.submit(item)
            outcomes[item] = None
        except Exception as error:
            outcomes[item] = error

    threads = [threading.Thread(target=submit, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return threads, outcomes


def eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def queued(subject: GroupCommit[int]) -> int:
    """Submissions waiting for the next batch (the queue is private; tests only count it)."""
    return subject._submitted.qsize()


def test_a_lone_submission_is_processed_alone_before_submit_returns() -> None:
    process = RecordingProcess()
    subject = GroupCommit(process, max_batch=8, wait_s=TIMEOUT_S)

    subject.submit(1)

    assert process.batches == [[1]]


def behind_a_held_batch(
    subject: GroupCommit[int], process: RecordingProcess, items: list[int]
) -> dict[int, object]:
    """Submit 0, hold its batch open while ``items`` are submitted, then let everything finish.

    Returns every submitter's outcome; the items were all waiting before the first batch ended.
    """
    threads, outcomes = submit_in_threads(subject, [0])
    assert process.first_started.wait(TIMEOUT_S)
    more_threads, more_outcomes = submit_in_threads(subject, items)
    eventually(lambda: queued(subject) == len(items))
    process.gate.set()
    for thread in threads + more_threads:
        thread.join(TIMEOUT_S)
    return {**outcomes, **more_outcomes}


def test_submissions_made_while_a_batch_is_processed_go_together_into_the_next() -> None:
    process = RecordingProcess(hold_first=True)
    subject = GroupCommit(process, max_batch=8, wait_s=TIMEOUT_S)

    outcomes = behind_a_held_batch(subject, process, [1, 2, 3, 4, 5])

    assert process.batches[0] == [0]
    assert sorted(process.batches[1]) == [1, 2, 3, 4, 5]
    assert outcomes == dict.fromkeys([0, 1, 2, 3, 4, 5])


def test_a_batch_holds_at_most_max_batch_items() -> None:
    process = RecordingProcess(hold_first=True)
    subject = GroupCommit(process, max_batch=2, wait_s=TIMEOUT_S)

    behind_a_held_batch(subject, process, [1, 2, 3, 4, 5])

    assert [len(batch) for batch in process.batches] == [1, 2, 2, 1]


def test_an_error_reaches_every_submitter_of_its_batch_and_the_next_batch_goes_on() -> None:
    process = RecordingProcess(hold_first=True)
    subject = GroupCommit(process, max_batch=8, wait_s=TIMEOUT_S)
    failure = RuntimeError("broker nacked")
    process.fail_with = failure
    outcomes = behind_a_held_batch(subject, process, [1, 2, 3])
    process.fail_with = None

    subject.submit(4)

    assert outcomes == dict.fromkeys([0, 1, 2, 3], failure)
    assert process.batches[-1] == [4]


def test_a_submission_no_batch_took_in_time_is_withdrawn_and_never_processed() -> None:
    process = RecordingProcess(hold_first=True)
    subject = GroupCommit(process, max_batch=8, wait_s=0.2)
    threads, first_outcomes = submit_in_threads(subject, [0])
    assert process.first_started.wait(TIMEOUT_S)

    with pytest.raises(GroupCommitTimeoutError, match="withdrawn"):
        subject.submit(1)
    process.gate.set()
    for thread in threads:
        thread.join(TIMEOUT_S)
    subject.submit(2)

    assert first_outcomes == {0: None}
    assert process.batches == [[0], [2]]


def test_a_submitter_whose_batch_outlasts_the_wait_gets_the_batch_outcome_not_a_timeout() -> None:
    process = RecordingProcess(hold_first=True)
    subject = GroupCommit(process, max_batch=8, wait_s=0.05)
    threads, outcomes = submit_in_threads(subject, [1])
    assert process.first_started.wait(TIMEOUT_S)

    time.sleep(0.2)  # well past wait_s, with the item inside a batch that has not ended
    process.gate.set()
    for thread in threads:
        thread.join(TIMEOUT_S)

    assert outcomes == {1: None}
    assert process.batches == [[1]]


def test_a_batch_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        GroupCommit(RecordingProcess(), max_batch=0, wait_s=1.0)


def test_on_batch_is_told_each_batch_size_before_it_is_processed() -> None:
    process = RecordingProcess(hold_first=True)
    sizes: list[int] = []
    subject = GroupCommit(process, max_batch=8, wait_s=TIMEOUT_S, on_batch=sizes.append)

    outcomes = behind_a_held_batch(subject, process, [1, 2, 3])

    assert sizes == [len(batch) for batch in process.batches] == [1, 3]
    assert outcomes == dict.fromkeys([0, 1, 2, 3])


def test_an_on_batch_that_raises_does_not_fail_the_batch() -> None:
    def broken(size: int) -> None:
        raise RuntimeError("metrics are down")

    process = RecordingProcess()
    subject = GroupCommit(process, max_batch=64, wait_s=TIMEOUT_S, on_batch=broken)

    subject.submit(7)

    assert process.batches == [[7]]
