"""The supervisor behind ``make run`` (``scripts/supervise.py``): restarts, backoff, one SIGTERM each.

The backoff is checked as plain arithmetic; the rest runs the real script on ``sh`` stand-ins
that record every SIGTERM they get, a few seconds in all. The real stack under it is
``tests/e2e/test_make_run_heals_itself.py``.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from scripts.supervise import Backoff

pytestmark = pytest.mark.unit

SUPERVISOR = Path(__file__).resolve().parents[2] / "scripts" / "supervise.py"
#: Seconds any step may take before the test gives up.
DEADLINE_S = 10.0


def test_the_delay_doubles_from_one_second_up_to_thirty_while_a_process_keeps_dying() -> None:
    backoff = Backoff()
    assert [backoff.delay_after(ran_for_s=0.5) for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]


def test_the_delay_goes_back_to_one_second_once_a_process_has_run_steadily() -> None:
    backoff = Backoff()
    for _ in range(4):
        backoff.delay_after(ran_for_s=0.5)
    assert backoff.delay_after(ran_for_s=59.0) == 16
    assert backoff.delay_after(ran_for_s=60.0) == 1
    assert backoff.delay_after(ran_for_s=0.5) == 2


#: The file whose existence lets the stand-ins exit. The ``supervisor`` context creates it on the
#: way out, so that a failed test leaves none of them running: they ignore SIGTERM until then.
RELEASE = "release"
#: Run by ``python -c`` before the supervisor: SIGINT and SIGTERM back at their defaults, then the
#: supervisor in this process's place. A shell without job control (a script, ``make``) starts a
#: background command with SIGINT ignored, and the supervisor keeps an ignored stop signal ignored
#: (as ``nohup`` asks it to), so the tests would depend on how pytest was started. ``sh`` cannot
#: do this: POSIX lets a non-interactive shell refuse to reset a signal ignored when it started.
_WITH_DEFAULT_STOP_SIGNALS = """\
import os, signal, sys
for stop in (signal.SIGINT, signal.SIGTERM):
    signal.signal(stop, signal.SIG_DFL)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


def _counting_sigterms(tmp_path: Path, name: str) -> str:
    """A stand-in child that appends a line to ``<name>.terms`` per SIGTERM and exits once released.

    It creates ``<name>.ready`` once its trap is set: a SIGTERM before that would kill it outright.
    """
    record, ready, release = tmp_path / f"{name}.terms", tmp_path / f"{name}.ready", tmp_path / RELEASE
    return (
        f'sh -c \'trap "echo term >> {record}" TERM; : > {ready}; '
        f"while [ ! -e {release} ]; do sleep 0.05; done'"
    )


@contextmanager
def supervisor(tmp_path: Path, *children: str) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """The supervisor on ``children`` (``NAME COMMAND`` pairs) and its log; stopped on the way out.

    It starts with the stop signals at their defaults, however pytest was started; on the way
    out the stand-ins are released first, so they end even if the supervisor has to be killed.
    """
    log = tmp_path / "supervise.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", _WITH_DEFAULT_STOP_SIGNALS, str(SUPERVISOR), *children],
            stdin=subprocess.DEVNULL,
            stderr=output,
            start_new_session=True,
        )
        try:
            yield process, log
        finally:
            (tmp_path / RELEASE).touch()
            # SIGTERM first, so that the supervisor stops its children; SIGKILL if it does not exit.
            if process.poll() is None:
                process.terminate()
            try:
                process.wait(timeout=DEADLINE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=DEADLINE_S)


def wait_for_files(*paths: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not all(path.exists() for path in paths):
        if time.monotonic() > deadline:
            missing = [path.name for path in paths if not path.exists()]
            pytest.fail(f"{missing} not created within {DEADLINE_S:.0f} s")
        time.sleep(0.05)


def wait_for_text(log: Path, text: str, count: int = 1) -> str:
    deadline = time.monotonic() + DEADLINE_S
    while (content := log.read_text()).count(text) < count:
        if time.monotonic() > deadline:
            pytest.fail(f"{count} x {text!r} not logged within {DEADLINE_S:.0f} s:\n{content}")
        time.sleep(0.05)
    return content


def test_a_process_that_exits_is_restarted_with_a_line_naming_it_its_status_and_the_delay(
    tmp_path: Path,
) -> None:
    with supervisor(tmp_path, "flaky", "sh -c 'sleep 0.2; exit 3'") as (_, log):
        content = wait_for_text(log, "started flaky", count=3)
    delays = re.findall(
        r"flaky \(pid \d+\) exited with status 3 after [\d.]+ s; restarting it in (\d+) s", content
    )
    assert delays[:2] == ["1", "2"], content


@pytest.mark.parametrize(("stop", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_sends_each_process_one_sigterm_waits_for_them_and_exits_128_plus_its_number(
    tmp_path: Path, stop: signal.Signals, status: int
) -> None:
    children = ("one", _counting_sigterms(tmp_path, "one"), "two", _counting_sigterms(tmp_path, "two"))
    with supervisor(tmp_path, *children) as (process, log):
        wait_for_files(tmp_path / "one.ready", tmp_path / "two.ready")
        process.send_signal(stop)
        wait_for_text(log, "stopping one, two")
        process.send_signal(stop)  # a second one, while the children are still stopping
        wait_for_text(log, "already stopping: waiting for one, two")
        (tmp_path / RELEASE).touch()
        exit_status = process.wait(timeout=DEADLINE_S)
        content = log.read_text()
    assert exit_status == status, content
    terms = [(tmp_path / f"{name}.terms").read_text() for name in ("one", "two")]
    assert terms == ["term\n", "term\n"]
    assert re.search(r"one \(pid \d+\) exited with status 0", content), content


def test_a_command_that_does_not_exist_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with supervisor(tmp_path, "ok", "sleep 5", "typo", "no-such-command --flag") as (process, log):
        exit_status = process.wait(timeout=DEADLINE_S)
    assert exit_status == 2
    assert "started" not in log.read_text()
