"""Group commit: the orders of concurrent requests stored in one transaction, confirmed in one window.

Each request used to pay for a transaction of its own (``BEGIN``, the ``INSERT``, ``COMMIT``) and a
hand-off of its one message to the publisher's I/O thread; with 16 to 32 requests in flight per
process, most of that was the same fixed cost paid again and again (docs/benchmarks.md). A
:class:`GroupCommit` collects the items submitted while the previous batch was being processed and
processes them together on a thread of its own, and each submitter returns only once its batch has
been processed, or raises what processing it raised: the batch is all or nothing, so what one
submitter is told holds for every item of its batch.

A submitter that gives up waiting must be able to say "not placed": its item is withdrawn if no
batch has taken it yet, and then never processed; once a batch has taken it, the submitter waits
for that batch's outcome, which the batch's own bounds (statement, confirm and commit timeouts)
bring within a bounded time.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")

logger = logging.getLogger(__name__)


class GroupCommitTimeoutError(Exception):
    """No batch took the item in time; it was withdrawn and will never be processed."""


@dataclass(frozen=True)
class _Submission(Generic[Item]):
    item: Item
    done: Future[None] = field(default_factory=Future)


class GroupCommit(Generic[Item]):
    """Runs ``process`` on batches of the submitted items, one batch at a time, on its own thread.

    A batch is whatever was submitted while the previous one was processed, up to ``max_batch``
    items: under light load every batch holds one item and a submitter waits no longer than it
    would alone; under load the batches grow with the number of requests in flight. The thread
    starts on first use, in the process that serves requests (after gunicorn has forked).
    """

    def __init__(
        self,
        process: Callable[[list[Item]], None],
        *,
        max_batch: int,
        wait_s: float,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """``on_batch``, if given, is told the size of each batch before it is processed (for metrics)."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._process = process
        self._max_batch = max_batch
        self._wait_s = wait_s
        self._on_batch = on_batch
        self._submitted: queue.SimpleQueue[_Submission[Item]] = queue.SimpleQueue()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, item: Item) -> None:
        """Have ``item`` processed in the next batch; return once that batch was processed.

        :raises GroupCommitTimeoutError: no batch took the item within ``wait_s`` (the batches
            ahead of it were stuck); it was withdrawn and will never be processed.
        :raises Exception: whatever processing the batch raised.
        """
        self._ensure_started()
        submission: _Submission[Item] = _Submission(item)
        self._submitted.put(submission)
        try:
            submission.done.result(timeout=self._wait_s)
        except FutureTimeout as error:
            if submission.done.cancel():
                raise GroupCommitTimeoutError(
                    f"no batch took the item within {self._wait_s} s; withdrawn"
                ) from error
            # A batch holds the item: only its outcome can say whether the item was processed.
            submission.done.result()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            batch = self._take([self._submitted.get()])
            while len(batch) < self._max_batch:
                try:
                    batch += self._take([self._submitted.get_nowait()])
                except queue.Empty:
                    break
            if not batch:
                continue
            self._report(len(batch))
            try:
                self._process([submission.item for submission in batch])
            except BaseException as error:
                for submission in batch:
                    submission.done.set_exception(error)
                if not isinstance(error, Exception):
                    raise
            else:
                for submission in batch:
                    submission.done.set_result(None)

    def _report(self, size: int) -> None:
        """Tell ``on_batch`` the batch's size; its error is logged, and ends neither batch nor thread."""
        if self._on_batch is None:
            return
        try:
            self._on_batch(size)
        except Exception:
            logger.exception("on_batch failed; the batch is processed all the same")

    @staticmethod
    def _take(submissions: list[_Submission[Item]]) -> list[_Submission[Item]]:
        """The submissions still wanted: one whose submitter gave up (cancelled) is dropped here."""
        return [submission for submission in submissions if submission.done.set_running_or_notify_cancel()]
