#!/usr/bin/env python3
"""Keep the processes of ``make run`` running: restart one that dies, stop them all on a signal.

Usage: ``supervise.py NAME COMMAND [NAME COMMAND ...]``, where ``COMMAND`` is split as a shell
would split it (no shell runs it). ``scripts/run.sh`` runs it for the API, the workers and the
reconciliation sweep. The standard library only: it adds nothing to install or to keep up to date.

The rules, and why:

- Each child leads a session of its own, so a terminal's Ctrl-C reaches only the supervisor,
  which decides what each child gets.
- A child that exits by itself is restarted after a backoff: 1 s, doubled at each death up to
  30 s, and back to 1 s once a child has run steadily for 60 s. A crash loop (say, the database
  is down) then costs a start every 30 s instead of a busy loop, and one crash after hours of
  work costs a second. Dramatiq's CLI exits when one of its worker processes dies (it stops the
  others first), so the whole pool is restarted here.
- Processes a dead child leaves behind in its session (gunicorn's workers after their master was
  killed) get one SIGTERM before the restart, so they finish what they hold and exit instead of
  running on as orphans. Their leader is gone, so nothing relays them a second one.
- SIGINT, SIGTERM or SIGHUP (the terminal closed) stops the whole stack: each running child gets
  exactly one SIGTERM, to its own pid and never to its process group, because Dramatiq takes a
  second SIGTERM as "kill the work in flight" and its CLI already relays the first to its worker
  processes. The supervisor then waits for every child, however long a graceful stop takes, and
  exits with 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from types import FrameType

#: The signals that stop the whole stack.
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
#: Exit status of a command line the supervisor cannot use.
USAGE_ERROR = 2

logger = logging.getLogger("supervise")


@dataclass
class Backoff:
    """Seconds to wait before restarting a child that died, given how long it had run."""

    #: The first delay, and the delay after a steady run.
    first_s: float = 1.0
    #: The longest delay, reached by doubling while a child keeps dying.
    longest_s: float = 30.0
    #: Seconds of running after which a death counts as a new incident, not part of a crash loop.
    steady_s: float = 60.0
    _next_s: float | None = None

    def delay_after(self, ran_for_s: float) -> float:
        """The delay before the next start; each call in a crash loop doubles the one after it."""
        if self._next_s is None or ran_for_s >= self.steady_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(2 * delay, self.longest_s)
        return delay


class Child:
    """One supervised command: its current process, when it started, and when to start it again."""

    def __init__(self, name: str, argv: Sequence[str], clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.argv = list(argv)
        self.backoff = Backoff()
        self.process: subprocess.Popen[bytes] | None = None
        #: When to start it again (on ``clock``), once it has died; ``None`` while it runs.
        self.restart_at: float | None = None
        self._clock = clock
        self._started_at = 0.0

    def start(self) -> None:
        """Start the command in a session of its own; a failure to start counts as a death."""
        self.restart_at = None
        self._started_at = self._clock()
        try:
            self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            self._schedule_restart(f"could not be started ({error})")
            return
        logger.info("started %s (pid %d)", self.name, self.process.pid)

    def exit_description(self) -> str | None:
        """How the child exited, if it has; it stays unreaped, so its pid and group stay its own."""
        if self.process is None:
            return None
        # WNOWAIT: until it is reaped, no new process can take its pid, hence its group id.
        info = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None or info.si_pid == 0:
            return None
        if info.si_code == os.CLD_EXITED:
            return f"exited with status {info.si_status}"
        return f"was killed by {_signal_name(info.si_status)}"

    def died(self, how: str) -> None:
        """Log the death, send what it left behind one SIGTERM, reap it and schedule its restart."""
        assert self.process is not None
        pid = self.process.pid
        with suppress(ProcessLookupError):  # the leader is dead: this reaches only what it left behind
            os.killpg(pid, signal.SIGTERM)
        self.process.wait()
        self.process = None
        self._schedule_restart(f"(pid {pid}) {how}")

    def terminate(self) -> None:
        """Send the running child its one SIGTERM: to its pid alone, never to its group."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGTERM)

    def _schedule_restart(self, what_happened: str) -> None:
        ran_for_s = self._clock() - self._started_at
        delay_s = self.backoff.delay_after(ran_for_s)
        self.restart_at = self._clock() + delay_s
        logger.warning(
            "%s %s after %.1f s; restarting it in %g s", self.name, what_happened, ran_for_s, delay_s
        )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal, which has no name of its own
        return f"signal {number}"


def _note(signum: int, frame: FrameType | None) -> None:
    """Do nothing: the signal's number is already in the inbox's pipe."""


class SignalInbox:
    """The signals received since the last look, gathered through a pipe so that a wait wakes up."""

    def __init__(self) -> None:
        self._read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        os.set_blocking(self._read_fd, False)
        # Python's C-level handler writes each signal's number to this pipe; a handler must be set
        # for that, even one that does nothing (SIGCHLD's default is to be ignored).
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, _note)
        for signum in STOP_SIGNALS:
            # A stop signal ignored at start stays ignored, as a shell leaves it: `nohup make run`.
            if signal.getsignal(signum) != signal.SIG_IGN:
                signal.signal(signum, _note)

    def wait(self, timeout_s: float | None) -> set[signal.Signals]:
        """Wait up to ``timeout_s`` (``None``: for ever) for a signal; those received since the last call."""
        select.select([self._read_fd], [], [], timeout_s)
        try:
            received = os.read(self._read_fd, 512)
        except BlockingIOError:
            return set()
        return {signal.Signals(number) for number in received}


def supervise(
    children: Sequence[Child], inbox: SignalInbox, clock: Callable[[], float] = time.monotonic
) -> int:
    """Run ``children`` until a stop signal; restart each one that dies. Returns the exit status."""
    for child in children:
        child.start()
    while True:
        restarts = [child.restart_at for child in children if child.restart_at is not None]
        timeout_s = max(0.0, min(restarts) - clock()) if restarts else None
        received = inbox.wait(timeout_s)
        stop = next((signum for signum in sorted(received) if signum in STOP_SIGNALS), None)
        if stop is not None:
            return _stop(children, stop, inbox)
        for child in children:
            how = child.exit_description()
            if how is not None:
                child.died(how)
        for child in children:
            if child.restart_at is not None and child.restart_at <= clock():
                child.start()


def _stop(children: Sequence[Child], signum: signal.Signals, inbox: SignalInbox) -> int:
    """Send each running child one SIGTERM and wait for all of them; 128 + ``signum``."""
    running = [child for child in children if child.process is not None]
    logger.info(
        "%s received: stopping %s (one SIGTERM each)", signum.name, ", ".join(c.name for c in running)
    )
    for child in running:
        child.terminate()
    while running:
        received = inbox.wait(None)
        for child in list(running):
            how = child.exit_description()
            if how is not None and child.process is not None:
                logger.info("%s (pid %d) %s", child.name, child.process.pid, how)
                child.process.wait()
                running.remove(child)
        if received & STOP_SIGNALS and running:
            names = ", ".join(child.name for child in running)
            logger.info("already stopping: waiting for %s (no second SIGTERM is sent)", names)
    return 128 + signum


def _children_from(arguments: Sequence[str]) -> list[Child]:
    """``NAME COMMAND`` pairs as children; raises ``ValueError`` for a command line it cannot use."""
    if not arguments or len(arguments) % 2:
        raise ValueError("expected NAME COMMAND pairs")
    children = []
    for name, command in zip(arguments[::2], arguments[1::2], strict=True):
        argv = shlex.split(command)
        if not argv or shutil.which(argv[0]) is None:
            raise ValueError(f"{name}: no such command: {command!r}")
        children.append(Child(name, argv))
    return children


def main(arguments: Sequence[str]) -> int:
    """Supervise the children named in ``arguments`` until a stop signal; the exit status."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [supervise] %(message)s", stream=sys.stderr)
    try:
        children = _children_from(arguments)
    except ValueError as error:
        logger.error("%s\nusage: supervise.py NAME COMMAND [NAME COMMAND ...]", error)
        return USAGE_ERROR
    return supervise(children, SignalInbox())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
