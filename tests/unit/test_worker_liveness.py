"""The workers' liveness signal: a heartbeat per process, touched only while its Dramatiq threads run.

A real Dramatiq ``Worker`` on the in-memory ``StubBroker``: real consumer and worker threads,
no RabbitMQ.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from orders_api.settings.liveness import WorkerLivenessSettings
from tests.settings_env import settings_under
from workers.liveness import WorkerLiveness, check, heartbeats

pytestmark = pytest.mark.unit

#: Seconds between touches in these tests.
INTERVAL_S = 0.05
#: Seconds a test waits for a touch before it fails.
TOUCH_DEADLINE_S = 5.0
#: A moment long past: a heartbeat set to it is stale for any bound.
LONG_AGO = time.time() - 3600


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return tmp_path / "alive"


@pytest.fixture
def liveness(base: Path) -> WorkerLiveness:
    return WorkerLiveness(base, interval_s=INTERVAL_S)


@pytest.fixture
def worker(liveness: WorkerLiveness) -> Iterator[dramatiq.Worker]:
    broker = StubBroker()
    broker.add_middleware(liveness)
    dramatiq.actor(queue_name="liveness-test", broker=broker)(lambda: None)
    running = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    running.start()
    yield running
    running.stop(timeout=5000)
    broker.close()


def own_heartbeat(liveness: WorkerLiveness) -> Path:
    assert liveness.path is not None, "the worker booted without a heartbeat"
    return liveness.path


def wait_for_touch(path: Path) -> bool:
    """Make ``path`` stale, then wait (bounded) for the middleware to touch it again."""
    os.utime(path, (LONG_AGO, LONG_AGO))
    deadline = time.monotonic() + TOUCH_DEADLINE_S
    while time.monotonic() < deadline:
        if path.stat().st_mtime > LONG_AGO + 1:
            return True
        time.sleep(INTERVAL_S / 2)
    return False


def test_the_heartbeat_is_named_after_the_process_and_touched_while_the_worker_runs(
    worker: dramatiq.Worker, liveness: WorkerLiveness, base: Path
) -> None:
    path = own_heartbeat(liveness)

    assert path.name == f"alive.{os.getppid()}.{os.getpid()}"
    assert wait_for_touch(path), "the heartbeat was not touched again"
    assert check(base, max_age_s=30) == (True, "1 worker process(es) live, last touches at most 30 s old")


def test_a_dead_consumer_thread_stops_the_touching_and_fails_the_check(
    worker: dramatiq.Worker, liveness: WorkerLiveness, base: Path
) -> None:
    consumer = next(iter(worker.consumers.values()))
    consumer.stop()
    consumer.join(timeout=5)
    assert not consumer.is_alive()

    assert liveness.beat(worker) is False
    os.utime(own_heartbeat(liveness), (LONG_AGO, LONG_AGO))
    live, reason = check(base, max_age_s=30)
    assert not live
    assert reason.startswith("heartbeats older than 30 s: pid ")


def test_a_dead_worker_thread_stops_the_touching(worker: dramatiq.Worker, liveness: WorkerLiveness) -> None:
    thread = worker.workers[0]
    thread.stop()
    thread.join(timeout=5)

    assert liveness.beat(worker) is False


def test_shutting_the_worker_down_stops_the_touching_thread(
    worker: dramatiq.Worker, liveness: WorkerLiveness
) -> None:
    assert liveness.beat(worker) is True

    worker.stop(timeout=5000)

    assert "worker-liveness" not in [thread.name for thread in threading.enumerate()]


def test_booting_removes_the_heartbeats_of_another_run_but_keeps_its_siblings(
    base: Path, liveness: WorkerLiveness
) -> None:
    other_run = base.with_name(f"alive.{os.getppid() + 1}.12345")
    sibling = base.with_name(f"alive.{os.getppid()}.{os.getpid() + 1}")
    for path in (other_run, sibling):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    broker = StubBroker()
    broker.add_middleware(liveness)
    dramatiq.actor(queue_name="liveness-test", broker=broker)(lambda: None)
    running = dramatiq.Worker(broker, worker_threads=1, worker_timeout=50)
    running.start()
    try:
        assert not other_run.exists()
        assert sibling.exists()
        assert own_heartbeat(liveness).exists()
    finally:
        running.stop(timeout=5000)
        broker.close()


def test_the_check_fails_without_any_heartbeat(base: Path) -> None:
    live, reason = check(base, max_age_s=30)

    assert not live
    assert reason.startswith("no heartbeat of a running worker process")


def test_the_check_ignores_the_heartbeats_of_processes_that_are_gone(base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead_pid = int(gone.stdout)
    stale_of_the_dead = base.with_name(f"alive.{os.getpid()}.{dead_pid}")
    stale_of_the_dead.touch()
    os.utime(stale_of_the_dead, (LONG_AGO, LONG_AGO))
    fresh = base.with_name(f"alive.{os.getppid()}.{os.getpid()}")
    fresh.touch()

    assert [heartbeat.pid for heartbeat in heartbeats(base)] == sorted([dead_pid, os.getpid()])
    assert check(base, max_age_s=30)[0] is True


def test_one_stale_process_fails_the_check_even_beside_a_fresh_one(base: Path) -> None:
    base.parent.mkdir(parents=True, exist_ok=True)
    fresh = base.with_name(f"alive.{os.getppid()}.{os.getpid()}")
    fresh.touch()
    stale = base.with_name(f"alive.{os.getppid()}.{os.getppid()}")  # a running process: our parent
    stale.touch()
    os.utime(stale, (LONG_AGO, LONG_AGO))

    live, reason = check(base, max_age_s=30)

    assert not live
    assert f"pid {os.getppid()}" in reason


@pytest.mark.parametrize(("age_s", "exit_code"), [(0, 0), (60, 1)])
def test_the_check_command_exits_non_zero_once_the_heartbeat_is_older_than_max_age(
    base: Path, age_s: int, exit_code: int
) -> None:
    heartbeat = base.with_name(f"alive.{os.getppid()}.{os.getpid()}")
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.touch()
    touched = time.time() - age_s
    os.utime(heartbeat, (touched, touched))

    result = subprocess.run(
        [sys.executable, "-m", "workers.liveness", "--max-age", "30"],
        env={**os.environ, "WORKER_LIVENESS_FILE": str(base)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == exit_code, result
    assert (result.stdout if exit_code == 0 else result.stderr).strip()


def test_the_heartbeat_file_defaults_to_the_temporary_directory_and_follows_the_environment() -> None:
    assert settings_under(WorkerLivenessSettings, {}).worker_liveness_file.name == "orders-worker-alive"
    configured = settings_under(WorkerLivenessSettings, {"WORKER_LIVENESS_FILE": "/somewhere/beat"})
    assert configured.worker_liveness_file == Path("/somewhere/beat")
