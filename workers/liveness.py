"""A liveness signal for the workers that a Kubernetes exec probe can check.

Workers serve no HTTP, and a worker process can be running yet doing nothing: hung, or with its
consumer or worker threads gone. :class:`WorkerLiveness` keeps touching a heartbeat file from each
worker process, every :data:`TOUCH_INTERVAL_S`, but only while all of that process's Dramatiq
threads are alive; the check command fails once any running process's heartbeat is too old::

    python -m workers.liveness --max-age 30

Each process has a heartbeat of its own (``<file>.<parent pid>.<pid>``, where ``<file>`` is
``WORKER_LIVENESS_FILE``, :mod:`orders_api.settings.liveness`): with one file shared by
``dramatiq -p 2``, a healthy process would hide a hung sibling. Heartbeats of another Dramatiq
run (another parent) are removed when a worker boots, and the check ignores those of processes
that are gone. A dead worker process needs no heartbeat to be noticed: the Dramatiq CLI then
stops all the others and exits.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dramatiq

from orders_api.settings.base import load
from orders_api.settings.liveness import WorkerLivenessSettings

logger = logging.getLogger(__name__)

#: Seconds between two touches of a heartbeat.
TOUCH_INTERVAL_S = 5.0
#: Default age, in seconds, past which the check fails: several missed touches, not one late one.
DEFAULT_MAX_AGE_S = 30.0


@dataclass(frozen=True)
class Heartbeat:
    """One worker process's heartbeat file."""

    path: Path
    parent_pid: int
    pid: int

    def age_s(self, now: float) -> float:
        """Seconds since the last touch; infinite when the file has vanished meanwhile."""
        try:
            return max(0.0, now - self.path.stat().st_mtime)
        except FileNotFoundError:
            return float("inf")


def heartbeats(base: Path) -> list[Heartbeat]:
    """The heartbeat files of every worker process that used ``base``, whether running or not."""
    pattern = re.compile(re.escape(base.name) + r"\.(\d+)\.(\d+)")
    found = []
    for path in base.parent.glob(f"{base.name}.*"):
        match = pattern.fullmatch(path.name)
        if match:
            found.append(Heartbeat(path, int(match[1]), int(match[2])))
    return sorted(found, key=lambda heartbeat: heartbeat.pid)


def threads_alive(worker: dramatiq.Worker) -> bool:
    """Whether the worker consumes and processes: it has consumers, and they and its workers all run."""
    consumers = list(worker.consumers.values())
    threads: list[threading.Thread] = [*consumers, *worker.workers]
    return bool(consumers) and bool(worker.workers) and all(thread.is_alive() for thread in threads)


class WorkerLiveness(dramatiq.Middleware):
    """Touches this process's heartbeat file while its Dramatiq threads are all alive.

    The touching runs in a daemon thread started in ``after_worker_boot`` and stopped in
    ``before_worker_shutdown``: a process shutting down, hung, or with a dead consumer or worker
    thread stops touching, and the check command fails once the heartbeat is older than its bound.
    """

    def __init__(self, base: Path, *, interval_s: float = TOUCH_INTERVAL_S) -> None:
        self.base = base
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._path: Path | None = None

    @property
    def path(self) -> Path | None:
        """The heartbeat file of the process, once its worker has booted."""
        return self._path

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Clear another run's heartbeats, touch ours, and keep touching it from a daemon thread."""
        parent_pid, pid = os.getppid(), os.getpid()
        self._path = self.base.with_name(f"{self.base.name}.{parent_pid}.{pid}")
        self.base.parent.mkdir(parents=True, exist_ok=True)
        for stale in heartbeats(self.base):
            if stale.parent_pid != parent_pid:
                stale.path.unlink(missing_ok=True)
        self._stop.clear()
        self.beat(worker)
        self._thread = threading.Thread(
            target=self._keep_beating, args=(worker,), name="worker-liveness", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop touching: a worker shutting down is no longer live, however long it takes to finish."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self.interval_s + 1)

    def beat(self, worker: dramatiq.Worker) -> bool:
        """Touch the heartbeat if the worker's threads are all alive; say whether it was touched."""
        if self._path is None or not threads_alive(worker):
            return False
        try:
            self._path.touch()
        except OSError:
            logger.exception("cannot touch the liveness file %s", self._path)
            return False
        return True

    def _keep_beating(self, worker: dramatiq.Worker) -> None:
        healthy = True
        while not self._stop.wait(self.interval_s):
            touched = self.beat(worker)
            if healthy and not touched:
                logger.error("worker threads are not all alive; no longer touching %s", self._path)
            healthy = touched


def check(base: Path, max_age_s: float, *, now: float | None = None) -> tuple[bool, str]:
    """Whether the workers are live, and why not.

    Live means: at least one heartbeat of a running process, and none of them older than
    ``max_age_s``. Heartbeats of processes that are gone are ignored.
    """
    now = time.time() if now is None else now
    running = [heartbeat for heartbeat in heartbeats(base) if _is_running(heartbeat.pid)]
    if not running:
        return False, f"no heartbeat of a running worker process at {base}.<parent pid>.<pid>"
    stale = [f"pid {hb.pid}: {hb.age_s(now):.0f} s" for hb in running if hb.age_s(now) > max_age_s]
    if stale:
        return False, f"heartbeats older than {max_age_s:g} s: {', '.join(stale)}"
    return True, f"{len(running)} worker process(es) live, last touches at most {max_age_s:g} s old"


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m workers.liveness``: exit 0 if the workers are live, 1 (with the reason) if not."""
    parser = argparse.ArgumentParser(prog="python -m workers.liveness", description=main.__doc__)
    parser.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE_S,
        help=f"seconds a heartbeat may be old (default {DEFAULT_MAX_AGE_S:g})",
    )
    parser.add_argument(
        "--file",
        type=Path,
        default=None,
        help="the heartbeat file (default $WORKER_LIVENESS_FILE, else one in the temporary directory)",
    )
    arguments = parser.parse_args(argv)
    live, reason = check(
        arguments.file or load(WorkerLivenessSettings).worker_liveness_file, arguments.max_age
    )
    print(reason, file=sys.stdout if live else sys.stderr)
    return 0 if live else 1


if __name__ == "__main__":
    sys.exit(main())
